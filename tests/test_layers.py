"""The package shows its layers (issue 33 item 5): the static import graph of easycore (every import statement, at
the top of a module or inside a function) has no circle and no arrow that runs up a layer.

    base      easycore.registry, config, store, rng, inference   (no torch needed to read params)
    data      easycore.data.*        datasets, loaders, streaming, the source files' identity
    core      easycore.core.*        AIGN, coresets, ACS, models, modes, training, attacks, evaluation, DDP
    pipeline  easycore.pipeline.*    run names, stage commands, groups, code dependencies, notebooks
    report    easycore.report.*      outcomes, the verdict, tables, figures, conclusions
    app       easycore.cli, easycore.api, easycore.__main__, easycore (the package's face)

A module may import its own layer and the layers below it. Registration needs no import by name: the registries
load the modules that register from the package's entry points (easycore/registry.py)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "easycore"
LAYERS = ("base", "data", "core", "pipeline", "report", "app")
BASE = {"easycore.registry", "easycore.config", "easycore.store", "easycore.rng", "easycore.inference"}
APP = {"easycore.cli", "easycore.api", "easycore.__main__", "easycore.__init__"}


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        rel = p.relative_to(PKG.parent).with_suffix("")
        out[".".join(rel.parts)] = p
    return out


def _layer(mod: str) -> str:
    if mod in BASE:
        return "base"
    if mod in APP:
        return "app"
    parts = mod.split(".")
    if len(parts) >= 3 and parts[1] in ("data", "core", "pipeline", "report"):
        return parts[1]
    raise AssertionError(f"{mod} is in no layer: put it in a subpackage or name it in tests/test_layers.py")


def _resolve(name: str, mods) -> str | None:
    if name in mods:
        return name
    if f"{name}.__init__" in mods:
        return f"{name}.__init__"
    return None


def _graph():
    mods = _modules()
    edges, relative = {}, []
    for mod, path in mods.items():
        tree = ast.parse(path.read_text())
        targets = set()
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom):
                if n.level:
                    relative.append(f"{mod}: from {'.' * n.level}{n.module or ''} import ...")
                    continue
                if n.module and (n.module == "easycore" or n.module.startswith("easycore.")):
                    for cand in [f"{n.module}.{a.name}" for a in n.names]:
                        r = _resolve(cand, mods)
                        if r:
                            targets.add(r)
                    r = _resolve(n.module, mods)
                    if r and not all(_resolve(f"{n.module}.{a.name}", mods) for a in n.names):
                        targets.add(r)
            elif isinstance(n, ast.Import):
                for a in n.names:
                    r = _resolve(a.name, mods) if a.name.startswith("easycore") else None
                    if r:
                        targets.add(r)
        edges[mod] = targets - {mod}
    return mods, edges, relative


def test_no_relative_imports():
    _, _, relative = _graph()
    assert not relative, "easycore imports absolutely (the code-dependency closure reads absolute names):\n" + \
        "\n".join(relative)


def test_every_module_is_in_a_layer_and_no_import_runs_up():
    mods, edges, _ = _graph()
    up = [f"{a} ({_layer(a)}) -> {b} ({_layer(b)})" for a, bs in edges.items() for b in bs
          if LAYERS.index(_layer(b)) > LAYERS.index(_layer(a))
          and not (a == "easycore.__init__")]
    assert not up, "imports that run up a layer:\n" + "\n".join(sorted(up))


def test_the_import_graph_has_no_circle():
    """Tarjan's strongly connected components over every import (function-level ones included)."""
    mods, edges, _ = _graph()
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    import sys
    sys.setrecursionlimit(10000)
    for v in sorted(mods):
        if v not in index:
            visit(v)
    detail = []
    for comp in comps:
        detail.append(", ".join(comp))
        detail += [f"  {a} -> {b}" for a in comp for b in sorted(edges[a]) if b in comp]
    assert not comps, "circles in the import graph:\n" + "\n".join(detail)


@pytest.mark.parametrize("layer", LAYERS[1:-1])
def test_each_layer_is_a_subpackage(layer):
    assert (PKG / layer / "__init__.py").exists()


def test_registrations_come_from_the_entry_points_or_the_checkouts_pyproject(monkeypatch):
    """The registries are filled by importing the modules that the entry points group easycore.registrations names
    (pyproject.toml); a checkout used without installing it reads the same table from its pyproject.toml; with
    neither, one clear error."""
    import importlib.metadata

    from easycore import registry

    declared = registry._declared_here()
    assert sorted(declared) == sorted(ep.value for ep in importlib.metadata.entry_points(group=registry.GROUP)
                                      if ep.value.startswith("easycore."))
    imported = []
    monkeypatch.setattr(registry, "import_module", imported.append)
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [])      # not installed
    monkeypatch.setattr(registry, "_loaded", False)
    registry.load_registrations()
    assert sorted(imported) == sorted(declared) and "easycore.core.methods" in imported
    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr(registry, "_declared_here", lambda: [])
    with pytest.raises(RuntimeError, match="make setup"):
        registry.load_registrations()
