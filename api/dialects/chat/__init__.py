"""OpenAI chat completions: parse the request, encode chunks and whole answers."""
