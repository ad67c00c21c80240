"""The model table: OpenAI-facing ids and the upstream model each one maps to (configuration)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Model:
    id: str
    upstream: str


class ModelTable:
    """Resolves what a client names (an id, or the upstream's own name) to a :class:`Model`."""

    def __init__(self, models: dict[str, str]) -> None:
        self._by_id = {mid: Model(mid, upstream) for mid, upstream in models.items()}
        self._by_name: dict[str, Model] = {}
        for model in self._by_id.values():
            self._by_name.setdefault(model.upstream, model)
            self._by_name.setdefault(model.upstream.lower(), model)
        for mid, model in self._by_id.items():
            self._by_name[mid] = model
            self._by_name[mid.lower()] = model

    def resolve(self, name: str) -> Model | None:
        return self._by_name.get(name) or self._by_name.get(name.lower())

    def ids(self) -> list[str]:
        return list(self._by_id)

    def accepted(self) -> list[str]:
        """Every name a client may send: the ids first, then the upstream names."""
        seen = dict.fromkeys(self._by_id)
        for model in self._by_id.values():
            seen.setdefault(model.upstream)
        return list(seen)
