"""Dialects: each parses its wire request into the engine's chat call and encodes the answer."""
