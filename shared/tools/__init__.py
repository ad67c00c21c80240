"""Tool calling and JSON output emulated on an upstream that has neither.

The API folds the tools and the output format into the one prompt (:mod:`shared.tools.convention`,
used by ``api.engine.fold``); the worker reads the answer back as it streams
(:mod:`shared.tools.parser`, :mod:`shared.tools.reader`), repairs and validates what it finds
(:mod:`shared.tools.repair`, :mod:`shared.tools.jsonout`). Both sides import this package, so the
convention is written down once. See docs/tools.md.
"""
