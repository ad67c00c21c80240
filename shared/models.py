"""The model table: OpenAI-facing ids and the upstream model each one maps to (configuration).

``MODEL_ALIASES`` may hold glob patterns (``*``, ``?``, ``[…]``, as :mod:`fnmatch` reads them),
so a client that sends names of its own, such as Claude Code's ``claude-…`` ids, needs no flag:
``{"claude-*": "decopy-deepseek-v3"}``. An exact name (an id, an alias, an upstream name) always
wins over a pattern; patterns are tried in the order they were given. A pattern is not listed by
``GET /v1/models`` (it names no one model).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass

_GLOB = re.compile(r"[*?\[]")


def is_pattern(name: str) -> bool:
    """Whether an alias is a glob pattern rather than one name."""
    return _GLOB.search(name) is not None


@dataclass(frozen=True)
class Model:
    id: str
    upstream: str


@dataclass(frozen=True)
class Name:
    """One name a client may send: a model id, an alias (``MODEL_ALIASES``) or an upstream name."""

    name: str
    model: Model

    @property
    def is_id(self) -> bool:
        return self.name == self.model.id


class ModelTable:
    """Resolves what a client names (an id, an alias, or the upstream's own name) to a :class:`Model`.

    Names match case-insensitively. Where two kinds of name collide, an id wins over an alias
    and an alias over an upstream name (the settings refuse an alias equal to an id).
    """

    def __init__(self, models: Mapping[str, str], aliases: Mapping[str, str] | None = None) -> None:
        self._by_id = {mid: Model(mid, upstream) for mid, upstream in models.items()}
        # Insertion order is the listing order: ids, then aliases, then upstream names.
        self._names: dict[str, Name] = {mid: Name(mid, model) for mid, model in self._by_id.items()}
        #: Glob aliases, compiled once, case-insensitive like every other name.
        self._patterns: list[tuple[re.Pattern[str], Model]] = []
        for alias, target in (aliases or {}).items():
            if target not in self._by_id:
                continue
            if is_pattern(alias):
                regex = re.compile(fnmatch.translate(alias.lower()))
                self._patterns.append((regex, self._by_id[target]))
            else:
                self._names.setdefault(alias, Name(alias, self._by_id[target]))
        for model in self._by_id.values():
            self._names.setdefault(model.upstream, Name(model.upstream, model))
        self._by_lower: dict[str, Model] = {}
        for name, entry in self._names.items():
            self._by_lower.setdefault(name.lower(), entry.model)

    def resolve(self, name: str) -> Model | None:
        entry = self._names.get(name)
        if entry is not None:
            return entry.model
        return self._by_lower.get(name.lower()) or self._match(name)

    def _match(self, name: str) -> Model | None:
        """The model of the first glob alias ``name`` matches (only after every exact name failed)."""
        lowered = name.lower()
        for regex, model in self._patterns:
            if regex.match(lowered):
                return model
        return None

    def entry(self, name: str) -> Name | None:
        """The listed name ``name`` stands for (another case of a name gives that model's id; a
        name matched by a glob alias is an alias of its model under the name as sent)."""
        entry = self._names.get(name)
        if entry is not None:
            return entry
        model = self._by_lower.get(name.lower())
        if model is not None:
            return Name(model.id, model)
        model = self._match(name)
        return Name(name, model) if model is not None else None

    def ids(self) -> list[str]:
        return list(self._by_id)

    def accepted(self) -> list[str]:
        """Every name a client may send: the ids first, then the aliases, then the upstream names."""
        return list(self._names)

    def names(self) -> list[Name]:
        """:meth:`accepted` with what each name maps to."""
        return list(self._names.values())
