"""The joints: dvc.yaml covers every module a stage's command runs, run paths have one source, every registered
coreset method shows up everywhere it should, the params schema does not import torch, and docs/extending.md works
when followed literally."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from easycore import cli, runs
from easycore.config import load_params

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "easycore"


# ----------------------------------------------------------------------------- import closure (AST)
def _easycore_imports(node: ast.AST, module: str) -> set[str]:
    """easycore modules imported anywhere under `node` (absolute or relative imports) of module `module`."""
    found = set()
    for n in ast.walk(node):
        if isinstance(n, ast.ImportFrom):
            if n.level:  # relative to the package
                base = n.module or ""
                if base:
                    found.add(f"easycore.{base}")
                else:
                    found.update(f"easycore.{a.name}" for a in n.names)
            elif n.module and (n.module == "easycore" or n.module.startswith("easycore.")):
                found.add(n.module) if n.module != "easycore" else found.update(f"easycore.{a.name}" for a in n.names)
        elif isinstance(n, ast.Import):
            found.update(a.name for a in n.names if a.name.startswith("easycore."))
    return {m for m in found if (PKG / f"{m.split('.', 1)[1]}.py").exists()}


def _tree(module: str) -> ast.Module:
    return ast.parse((PKG / f"{module.split('.', 1)[1]}.py").read_text())


def _module_level(tree: ast.Module, module: str) -> set[str]:
    top = ast.Module(body=[s for s in tree.body if isinstance(s, (ast.Import, ast.ImportFrom))], type_ignores=[])
    return _easycore_imports(top, module)


def module_closure(start: set[str]) -> set[str]:
    """Every easycore module reachable from `start` through imports anywhere in those modules (a module that is
    imported may run any of its functions)."""
    seen, todo = set(), list(start)
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo.extend(_easycore_imports(_tree(m), m) - seen)
    return seen


def function_closure(entry: str) -> set[str]:
    """Modules a call of 'module:function' can execute: its module, the module's top-level imports, the imports in
    the function's body and in every function of the same module it refers to (transitively), and everything those
    modules reach."""
    module, name = entry.split(":")
    tree = _tree(module)
    defs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    aliases = {t.id: n.value.id for n in tree.body if isinstance(n, ast.Assign) and isinstance(n.value, ast.Name)
               for t in n.targets if isinstance(t, ast.Name)}
    imports, seen, todo = set(), set(), [aliases.get(name, name)]
    while todo:
        f = todo.pop()
        if f in seen or f not in defs:
            continue
        seen.add(f)
        imports |= _easycore_imports(defs[f], module)
        todo.extend(aliases.get(n.id, n.id) for n in ast.walk(defs[f]) if isinstance(n, ast.Name))
    assert aliases.get(name, name) in seen, f"{entry} not found"
    return {module} | module_closure(_module_level(tree, module) | imports)


def _stage_code_deps(stage: dict) -> set[str]:
    return {d for d in stage.get("deps", []) if isinstance(d, str) and (d == "easycore" or d.startswith("easycore/"))}


def test_every_stage_depends_on_the_code_its_command_runs():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]   # YAML merge keys resolved
    checked = 0
    for name, st in stages.items():
        m = re.match(r"easycore (\w+)", st["cmd"])
        assert m[1] in ("check", "prepare", "proxy", "select", "train", "eval", "autoattack", "notebook"), st["cmd"]
        assert m, f"stage {name}: its command is not an easycore subcommand: {st['cmd']}"
        need = function_closure(cli.ENTRY[m[1]]) | function_closure("easycore.cli:main") | {"easycore.__init__"}
        deps = _stage_code_deps(st)
        if "easycore" in deps:
            continue
        files = {f"easycore/{m.split('.', 1)[1]}.py" for m in need}
        missing = sorted(files - deps)
        assert not missing, f"dvc.yaml stage {name!r} runs {missing} but does not depend on them"
        checked += 1
    assert checked >= 5


def test_closure_is_tight_where_it_matters():
    """The proxy must not re-run when evaluation, reporting or coreset code changes."""
    proxy = function_closure(cli.ENTRY["proxy"])
    assert {"easycore.train", "easycore.aign", "easycore.attacks"} <= proxy
    assert not proxy & {"easycore.evaluate", "easycore.report", "easycore.coresets", "easycore.stats"}
    assert "easycore.evaluate" in function_closure(cli.ENTRY["eval"])


def test_schema_does_not_import_torch():
    code = "import sys, easycore.config as c; c.Params(); assert 'torch' not in sys.modules, 'torch imported'"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr


# ----------------------------------------------------------------------------- one source for run paths
def test_dvc_paths_are_the_runs_module_paths():
    """DVC renders dvc.yaml for the repo's params; its train/evaluate outputs are exactly runs.expected_runs'."""
    dvc_repo = pytest.importorskip("dvc.repo")
    params = load_params(ROOT / "params.yaml")
    with dvc_repo.Repo(str(ROOT)) as repo:
        outs = {str(o.def_path) for st in repo.index.stages for o in st.outs}
    expected = runs.expected_runs(params)
    assert expected, "the repo's params declare no runs"
    train = {p for p in outs if p.startswith("runs/train/") and p.endswith("model.safetensors")}
    evals = {p for p in outs if p.startswith("runs/eval/") and p.endswith("metrics.json")}
    assert train == {str(r.train_dir() / "model.safetensors") for r in expected}
    assert evals == {str(r.eval_dir() / "metrics.json") for r in expected}
    for r in expected:
        assert runs.parse(r.key) == r
        if r.selection_dir() is not None:
            assert str(r.selection_dir() / "indices.npy") in outs


@pytest.mark.parametrize("f", [0.3, 0.1, 0.05, 0.3333333, 0.25])
def test_fraction_names_round_trip(f):
    r = runs.Run("main", "easycore", f, "trades", 2)
    assert runs.parse(str(r.train_dir())) == r and str(f) in r.name


@pytest.mark.parametrize("text", ["coreset:\n  fractions: [1]\n", "coreset:\n  fractions: [3e-1]\n"])
def test_fraction_spellings_that_would_name_other_folders_are_refused(tmp_path, text):
    from easycore.config import ConfigError

    (tmp_path / "p.yaml").write_text(text)
    with pytest.raises(ConfigError, match="coreset.fractions"):
        load_params(tmp_path / "p.yaml")


# ----------------------------------------------------------------------------- the method registry
def test_every_registered_method_appears_everywhere():
    from easycore.config import CoresetConfig
    from easycore.coresets import METHODS, direction_table_markdown

    out = subprocess.run([sys.executable, "-m", "easycore", "methods"], capture_output=True, text=True, cwd=ROOT).stdout
    readme = (ROOT / "README.md").read_text()
    assert direction_table_markdown() in readme, "README's method table differs from `easycore methods`"
    fields = {f.name: f for f in CoresetConfig.__dataclass_fields__.values()}
    static = fields["methods"].metadata["rule"].choices()
    adaptive = fields["adaptive"].metadata["rule"].choices()
    for name, e in METHODS.items():
        assert f"`{name}`" in out
        if e.kind == "static":
            assert name in static and name not in adaptive
        elif e.kind == "adaptive":
            assert name in adaptive and name not in static


@pytest.mark.parametrize("f", [0.1, 0.3])
def test_every_static_method_selects_exactly_the_budget(f):
    from easycore.coresets import METHODS, budget, select

    rng = np.random.default_rng(0)
    n, e = 120, 4
    labels = np.repeat(np.arange(4), n // 4)
    art = {k: rng.random((e, n)).astype(np.float32) for k in ("aign_l1", "aign_l2", "aign_linf", "loss", "margin",
                                                              "el2n", "grand", "entropy")}
    art.update(correct=rng.random((e, n)) > 0.3, features=rng.normal(size=(n, 8)).astype(np.float32),
               deepfool=rng.random(n).astype(np.float32), labels=labels)
    for name in METHODS.names(kind="static"):
        idx = select(name, art, labels, f, seed=1, device="cpu")
        assert len(idx) == budget(f, n) and len(np.unique(idx)) == len(idx), name


# ----------------------------------------------------------------------------- docs/extending.md, literally
def _code_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_extending_doc_adds_a_toy_method(tmp_path):
    """Run the doc's code blocks as written (they register a toy method, mode and attack), then use them."""
    blocks = _code_blocks(ROOT / "docs" / "extending.md")
    assert len(blocks) >= 4
    script = tmp_path / "follow_the_doc.py"
    script.write_text("\n\n".join(blocks) + "\n\nprint('followed')\n")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "followed" in r.stdout
