"""What the API and the workers both import: settings, Redis names, the channel format, errors."""
