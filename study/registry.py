"""Name -> (class, typed config, one-line description) registries for archs and tasks.

Names are stored as values in Parquet, so they never change: add an alias, never rename.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from pydantic import BaseModel


@dataclass(frozen=True)
class Entry:
    name: str
    cls: type
    config: type[BaseModel]
    description: str
    paper: str


@dataclass(frozen=True)
class IO:
    """The contract between a task and a model (so neither imports the other): the task feeds
    token ids (vocab_size) or features (d_in) and expects d_out outputs per step."""
    d_out: int
    vocab_size: int | None = None
    d_in: int | None = None


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, config: type[BaseModel], description: str, paper: str = "") -> Callable:
        def add(cls: type) -> type:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = Entry(name, cls, config, description, paper)
            return cls
        return add

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str) -> Entry:
        if name not in self._entries:
            raise KeyError(f"unknown {self.kind} {name!r} (valid: {', '.join(self.names())})")
        return self._entries[name]

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def fields(self, name: str) -> dict[str, Any]:
        """The config's field names and annotations: the keys a spec may set for this entry."""
        return {k: f.annotation for k, f in self.get(name).config.model_fields.items()}

    def all_fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for n in self.names():
            out.update(self.fields(n))
        return out


MODELS = Registry("arch")
TASKS = Registry("task")
