"""One registry per concept: coreset methods, training modes, attacks, datasets, models.

A registry maps a name to a function and a few facts about it (`meta`). Adding a method, a mode, an attack, a dataset
or a model is one function and one `@REGISTRY.register(...)` line next to it; everything that lists choices (the
params schema, the CLI, `easycore methods`, the README table, the notebooks) reads the registry.

This module imports nothing heavy: the params schema names a registry by its kind (`choices("models")`), and the
modules that register are imported (`load_registrations`: the package's entry points) only when the choices are
needed, so `import easycore.config` does not import torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping


def did_you_mean(word: object, choices) -> str:
    """'; did you mean X?' for the closest of `choices` (difflib ratio >= 0.6), else ''."""
    import difflib

    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


@dataclass(frozen=True)
class Entry:
    name: str
    fn: Callable[..., Any]
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __getattr__(self, key: str) -> Any:  # entry.keep, entry.needs, ... read from meta
        try:
            return self.meta[key]
        except KeyError:
            raise AttributeError(f"{self.name!r} has no {key!r}") from None


class Registry:
    """An ordered name -> Entry map filled by the `register` decorator; iteration order = registration order."""

    def __init__(self, kind: str, key: str | None = None):
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        if key is not None:                  # the name the params schema uses (choices("methods"))
            REGISTRIES[key] = self

    def register(self, name: str | None = None, **meta: Any) -> Callable:
        def deco(fn: Callable) -> Callable:
            key = name or fn.__name__
            if key in self._entries:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._entries[key] = Entry(key, fn, dict(meta))
            return fn
        return deco

    def unregister(self, name: str) -> None:
        """Remove an entry (tests that register a toy entry clean up with this)."""
        self._entries.pop(name, None)

    def __getitem__(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise KeyError(f"unknown {self.kind} {name!r}{did_you_mean(name, self.names())}; "
                           f"choose one of {self.names()}") from None

    def get(self, name: str) -> Entry:
        """The entry, or ValueError naming the choices."""
        try:
            return self[name]
        except KeyError as e:
            raise ValueError(e.args[0]) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self, **where: Any) -> list[str]:
        """Names in registration order, optionally only those whose meta matches every `where` item."""
        return [n for n, e in self._entries.items() if all(e.meta.get(k) == v for k, v in where.items())]

    def items(self):
        return self._entries.items()

    def entries(self) -> list[Entry]:
        return list(self._entries.values())


# Every registry, by the name the params schema uses for it (filled as each registry is made).
REGISTRIES: dict[str, Registry] = {}
GROUP = "easycore.registrations"
_loaded = False


def load_registrations() -> None:
    """Import every module that registers entries: the entry points of group 'easycore.registrations' (this package
    declares its own in pyproject.toml; another installed package adds methods, models, ... by declaring its
    modules there). No module is named here: the registries know what registers into them from the installed
    metadata."""
    global _loaded
    if _loaded:
        return
    from importlib.metadata import entry_points

    eps = [ep.value for ep in entry_points(group=GROUP)]
    if not any(v.split(":")[0].startswith("easycore.") for v in eps):
        eps += _declared_here()          # a checkout used without installing it (PYTHONPATH=.): its pyproject.toml
    if not any(v.split(":")[0].startswith("easycore.") for v in eps):
        raise RuntimeError(f"easycore's own registrations ({GROUP} entry points) are not installed: run "
                           f"`make setup` (pip install --no-deps -e .) in this checkout")
    _loaded = True
    for value in eps:
        import_module(value.split(":")[0])


def _declared_here() -> list[str]:
    """The entry points of GROUP that the pyproject.toml beside this package declares (none if there is none)."""
    import tomllib

    path = Path(__file__).resolve().parents[1] / "pyproject.toml"
    if not path.is_file():
        return []
    table = tomllib.loads(path.read_text()).get("project", {}).get("entry-points", {}).get(GROUP, {})
    return list(table.values())


def registry(kind: str) -> Registry:
    """The registry of `kind` ('methods' | 'modes' | 'attacks' | 'datasets' | 'models'), its registrations loaded."""
    load_registrations()
    return REGISTRIES[kind]


def choices(registry_kind: str, **where: Any) -> Callable[[], list[str]]:
    """A deferred list of names, for the params schema (evaluated when params are checked). kind 'scores': the
    per-sample scores the static coreset methods rank by."""
    if registry_kind == "scores":
        return lambda: list(dict.fromkeys(e.score for e in registry("methods").entries()
                                          if e.meta.get("keep") in ("low", "high")))
    return lambda: registry(registry_kind).names(**where)
