"""What every group of doctor checks shares: the settings, the report, and adding or failing a step."""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn

from shared.settings import Settings
from worker.doctor.report import Report, Step, Stop


class Steps:
    """The doctor's state that its probes (network, protocol) add their steps to."""

    settings: Settings
    report: Report
    _on_step: Callable[[Step], None]

    def _add(self, step: Step) -> Step:
        self.report.steps.append(step)
        self._on_step(step)
        return step

    def _fail(self, step: Step) -> NoReturn:
        self._add(step)
        raise Stop()
