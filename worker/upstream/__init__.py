"""Upstreams the worker can call. Each implements :class:`worker.upstream.base.Upstream`."""
