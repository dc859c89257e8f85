"""Code dependencies of the stage commands, derived from the code (AST import closure), so dvc.yaml is correct by
construction.

`closure(entry)` is the set of easycore modules a call of 'module:function' can execute: its module, that module's
top-level imports, the imports inside the function and inside every function of the same module it refers to
(transitively), and everything those modules import anywhere. The `check` stage writes one file per stage command,
`runs/code/<command>.txt`, listing each module of the command's closure (and cli.main's) with the hash of its
normalised AST (`code_digest`: comments, formatting and docstrings do not count); each stage of dvc.yaml depends
on its command's file. Editing a module re-runs exactly the stages whose
commands can execute it (the other files come out byte-identical), and dvc.lock stays small (one code entry per
stage instead of one per module: DVC re-reads and rewrites dvc.lock after every stage, so its size is most of a
stage's overhead).
"""
from __future__ import annotations

import ast
import hashlib
from pathlib import Path

PKG = Path(__file__).resolve().parents[1]     # the easycore package
CODE = Path("runs/code")


def _path(module: str) -> Path:
    """'easycore.core.train' -> easycore/core/train.py; a package ('easycore.report', 'easycore') -> its __init__.py."""
    parts = module.split(".")[1:]
    if parts == ["__init__"]:
        parts = []
    f = PKG.joinpath(*parts).with_suffix(".py") if parts else PKG / "__init__.py"
    return f if f.exists() else PKG.joinpath(*parts, "__init__.py")


def _name(module: str) -> str:
    """One name per file: a package's module name is '<package>.__init__'."""
    if module.endswith(".__init__"):
        return module
    return f"{module}.__init__" if _path(module).name == "__init__.py" else module


def _relpath(module: str) -> str:
    """'easycore/core/train.py' for 'easycore.core.train' ('easycore/__init__.py' for 'easycore.__init__')."""
    return "/".join(module.split(".")) + ".py"


def _imports(node: ast.AST) -> set[str]:
    """easycore modules imported anywhere under `node` (absolute imports: the package uses no relative ones,
    tests/test_architecture.py checks); `from easycore.x import y` counts easycore.x and, where y is a module,
    easycore.x.y."""
    found = set()
    for n in ast.walk(node):
        if isinstance(n, ast.ImportFrom) and not n.level and n.module \
                and (n.module == "easycore" or n.module.startswith("easycore.")):
            found.add(n.module)
            found.update(f"{n.module}.{a.name}" for a in n.names)
        elif isinstance(n, ast.Import):
            found.update(a.name for a in n.names if a.name == "easycore" or a.name.startswith("easycore."))
    return {_name(m) for m in found if _path(m).exists()}


def _tree(module: str) -> ast.Module:
    return ast.parse(_path(module).read_text())


def module_closure(start: set[str]) -> set[str]:
    """Every easycore module reachable from `start` through imports anywhere in those modules (an imported module
    may run any of its functions)."""
    seen, todo = set(), list(start)
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(_imports(_tree(m)) - seen)
    return seen


def closure(entry: str) -> set[str]:
    """The modules a call of 'module:function' can execute (see the module docstring)."""
    module, name = entry.split(":")
    tree = _tree(module)
    defs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    aliases = {t.id: n.value.id for n in tree.body if isinstance(n, ast.Assign) and isinstance(n.value, ast.Name)
               for t in n.targets if isinstance(t, ast.Name)}
    top = _imports(ast.Module(body=[s for s in tree.body if isinstance(s, (ast.Import, ast.ImportFrom))],
                              type_ignores=[]))
    found, seen, todo = set(), set(), [aliases.get(name, name)]
    while todo:
        f = todo.pop()
        if f in seen or f not in defs:
            continue
        seen.add(f)
        found |= _imports(defs[f])
        todo.extend(aliases.get(n.id, n.id) for n in ast.walk(defs[f]) if isinstance(n, ast.Name))
    if aliases.get(name, name) not in seen:
        raise ValueError(f"{entry}: no such function")
    return {module} | module_closure(top | found)


NOTEBOOKS = Path("notebooks")


def notebook_imports(folder: Path = NOTEBOOKS) -> set[str]:
    """The easycore modules the report notebooks (notebooks/*.py, jupytext scripts) import anywhere."""
    found = set()
    for f in sorted(Path(folder).glob("*.py")):
        found |= _imports(ast.parse(f.read_text()))
    return found


def command_closure(command: str) -> set[str]:
    """The modules `easycore <command>` can execute: its entry function's closure, cli.main's, the package; for
    `notebook` (the report stages) also everything the notebooks' kernels can import (notebook_imports)."""
    from easycore.pipeline.commands import ENTRY

    mods = closure(ENTRY[command]) | closure("easycore.cli:main") | {"easycore.__init__"}
    if command == "notebook":
        mods |= module_closure(notebook_imports())
    return mods


def code_digest(source: str) -> str:
    """sha256 of a module's normalised AST: what the code does, not how it is written. Comments, blank lines,
    formatting and docstrings do not change it (a comment-only edit re-runs no stage); any change to the code does."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body \
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree, annotate_fields=True, include_attributes=False).encode()).hexdigest()


def manifest(command: str) -> str:
    """'easycore/<module>.py <code_digest of its source>' per module of the command's closure, sorted."""
    lines = []
    for m in sorted(command_closure(command)):
        p = _path(m)
        lines.append(f"{_relpath(m)} {code_digest(p.read_text())}")
    return "\n".join(lines) + "\n"


STAGE_COMMANDS = ("source", "prepare", "proxy", "select", "train", "eval", "autoattack", "notebook")

# The params each many-run stage family reads. These families have one stage per run (hundreds in a study), and DVC
# stores a stage's `params:` values in its dvc.lock entry and re-parses and rewrites the whole dvc.lock after every
# stage: listing them per stage made dvc.lock grow by ~3 KB per stage and most of a stage's wall time YAML parsing.
# Instead `check` (which declares every params section) writes runs/params/<family>.json, the canonical values of
# these keys, and each stage of the family depends on that file: a changed value re-runs exactly the family.
# runtime keys that can change a result (runtime.concurrent, how many runs train at once, cannot: not a dependency)
RUNTIME = tuple(f"runtime.{k}" for k in ("device", "amp", "cpu_bf16", "channels_last", "compile", "deterministic",
                                                   "sync_bn"))
STAGE_PARAMS = {
    "select": ("coreset.methods", "coreset.fractions", "coreset.survey_methods", "coreset.survey_fractions",
               "coreset.transfer_methods", "train.seeds", "train.survey_seeds",  # which coresets a select stage makes
               "report.primary.fractions",
               "coreset.balanced", "coreset.seed", "coreset.window", "coreset.p", "coreset.squared",
               "coreset.score_epochs", "coreset.ccs_score", "coreset.ccs_cutoff", "coreset.moderate_band"),
    "train": ("train", *RUNTIME, "report.primary.fractions"),    # (which seeds a group trains: runs.fraction_seeds)
    "train_adaptive": ("train", *RUNTIME, "coreset.acs", "coreset.seed"),
    # (how many test images a group's evaluation takes: eval.primary_n_test for the primary family's groups)
    "eval": ("eval", *RUNTIME, "report.primary.method", "report.primary.comparator", "report.primary.fractions"),
}
PARAMS = Path("runs/params")


def _deepfool_replicates(params) -> dict:
    """Which replicates of each proxy run compute DeepFool distances (runs.needs_deepfool): derived from the
    methods, so a proxy stage depends on this (runs/params/proxy.json) instead of on coreset.methods: adding a
    method that needs no DeepFool re-runs no proxy."""
    from easycore.pipeline import runs

    return {name: [s for s in runs.proxy_seeds(params, name) if runs.needs_deepfool(params, name, s)]
            for name in ["main", *params.proxy.transfer_models]}


# families whose dependency file holds values derived from the params (besides STAGE_PARAMS' keys)
DERIVED = {"proxy": lambda params: {"deepfool_replicates": _deepfool_replicates(params)}}


def family_values(params, family: str) -> dict:
    """What runs/params/<family>.json holds: the family's params keys and its derived values."""
    out = params_values(params, STAGE_PARAMS.get(family, ()))
    if family in DERIVED:
        out.update(DERIVED[family](params))
    return out


def params_values(params, keys) -> dict:
    """{dotted key: value} of `keys` in a Params object, as plain JSON-able values."""
    import dataclasses

    out = {}
    for key in keys:
        v = params
        for part in key.split("."):
            v = getattr(v, part)
        out[key] = dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v
    return out


def write_manifests(out: Path = CODE) -> list[Path]:
    """runs/code/<command>.txt for every stage command (atomically; unchanged content gives unchanged bytes)."""
    from easycore.store import atomic_path

    paths = []
    for cmd in STAGE_COMMANDS:
        p = Path(out) / f"{cmd}.txt"
        with atomic_path(p) as tmp:
            tmp.write_text(manifest(cmd))
        paths.append(p)
    return paths


def write_params(params, out: Path = PARAMS) -> list[Path]:
    """runs/params/<family>.json for every family of STAGE_PARAMS: sorted keys, fixed format (byte-stable)."""
    import json

    from easycore.store import atomic_path

    paths = []
    for family in [*STAGE_PARAMS, *DERIVED]:
        p = Path(out) / f"{family}.json"
        with atomic_path(p) as tmp:
            tmp.write_text(json.dumps(family_values(params, family), indent=1, sort_keys=True) + "\n")
        paths.append(p)
    return paths


def _flat(d, prefix: str = "") -> dict:
    """{dotted key: leaf value} of nested dicts."""
    if not isinstance(d, dict):
        return {prefix: d}
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def check_recorded(params, family: str, out: Path = PARAMS) -> None:
    """ConfigError unless runs/params/<family>.json, the dependency file a stage of `family` is recorded under in
    dvc.lock (written by `check`), holds params' values. `dvc repro -f -s <stage>` skips check: after an edit of
    params.yaml the stage would run with the new values and DVC would lock its result under the old file, so a
    later `dvc repro` (the edit reverted) would keep that result as the old values' (a 7-epoch model under
    train.epochs 2)."""
    import json

    from easycore.config import ConfigError

    path = Path(out) / f"{family}.json"
    want = _flat(json.loads(json.dumps(family_values(params, family))))
    try:
        got = _flat(json.loads(path.read_text()))
    except (OSError, ValueError):
        raise ConfigError(f"{path} (the params a {family} stage runs under, written by the check stage) is missing "
                          f"or unreadable: run `dvc repro` without -s") from None
    diff = sorted(k for k in want.keys() | got.keys() if want.get(k, ...) != got.get(k, ...))
    if diff:
        shown = ", ".join(f"{k} {want.get(k)!r} (recorded: {got.get(k)!r})" for k in diff[:3])
        raise ConfigError(f"params.yaml differs from {path}, the params this stage is recorded under: {shown}"
                          f"{' ...' if len(diff) > 3 else ''}; run `dvc repro` without -s (its check stage records "
                          f"them first), or revert params.yaml")

