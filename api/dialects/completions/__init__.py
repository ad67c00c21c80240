"""OpenAI's legacy completions (``/v1/completions``): one prompt in, text out, as older tools expect."""
