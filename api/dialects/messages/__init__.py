"""Anthropic's Messages API (``/v1/messages``): parse the request, encode events, messages and errors."""
