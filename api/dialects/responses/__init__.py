"""OpenAI's Responses API (``/v1/responses``): parse, encode typed events, keep stored responses."""
