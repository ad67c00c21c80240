"""Logging set-up shared by both entry points."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stdout,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # arq logs each job's arguments at INFO: they hold the prompt, which is never logged.
    logging.getLogger("arq").setLevel(logging.WARNING)
