"""How long a lost connection waits before it tries again: one rule for every reconnect loop.

The API's pub/sub hub and the worker's wake-up listener both reconnect to Redis forever. Each
wait doubles, from ``first`` up to ``ceiling`` seconds, with jitter (between half and one and a
half times the step), so processes that lost Redis together do not all come back in the same
instant; a success starts again from ``first``. (A failed upstream *attempt* has its own rule,
``worker.jobs.runner.backoff_delay``: it counts attempts of one job, not reconnections.)
"""

from __future__ import annotations

import random


class Backoff:
    """Successive reconnect delays (see the module docstring)."""

    def __init__(self, first: float = 0.1, ceiling: float = 2.0) -> None:
        self.first = first
        self.ceiling = ceiling
        self._step = first

    def next(self) -> float:
        """The delay before the next try (seconds); the one after it doubles."""
        delay = self._step * (0.5 + random.random())
        self._step = min(self._step * 2, self.ceiling)
        return delay

    def reset(self) -> None:
        """Connected again: the next loss starts from ``first``."""
        self._step = self.first
