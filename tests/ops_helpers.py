"""helpers for the tests: Prometheus text parsing and polling the gateway's metric pages."""

from __future__ import annotations

from collections.abc import Iterable

import httpx
from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of a Prometheus text page as (name, labels, value)."""
    return [(s.name, dict(s.labels), s.value) for fam in text_string_to_metric_families(text) for s in fam.samples]


def total(text: str, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(v for n, lab, v in samples(text) if n == name and all(lab.get(k) == w for k, w in labels.items()))


def label_values(text: str, name: str, label: str) -> set[str]:
    return {lab[label] for n, lab, _ in samples(text) if n == name and label in lab}


def fresh_get(base_url: str, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """GET on a new connection (so successive calls may reach different uvicorn processes)."""
    with httpx.Client(base_url=base_url, timeout=30, headers=headers or {}) as http:
        return http.get(path)


def lines_with(log: str, needles: Iterable[str]) -> list[str]:
    return [line for line in log.splitlines() if all(n in line for n in needles)]
