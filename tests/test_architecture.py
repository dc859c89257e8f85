"""The joints: dvc.yaml covers every module a stage's command runs, run paths have one source, every registered
coreset method shows up everywhere it should, the params schema does not import torch, and docs/extending.md works
when followed literally."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from easycore import cli
from easycore.pipeline import deps, runs
from easycore.config import load_params

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "easycore"


# ----------------------------------------------------------------------------- code dependencies by construction
def test_every_stage_depends_on_its_commands_code_file():
    """Each stage depends on runs/code/<its command>.txt (written by `check`, which depends on the whole package),
    and on no single module file: the file's content is derived from the code, so dvc.yaml cannot miss one."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]   # YAML merge keys resolved
    assert set(stages["check"]["deps"]) == {"easycore", "matrix.yaml"}   # matrix.yaml: the lists dvc.yaml expands
    assert {f"runs/code/{c}.txt" for c in deps.STAGE_COMMANDS} <= set(stages["check"]["outs"])
    for name, st in stages.items():
        m = re.match(r"easycore (\w+)", st["cmd"])
        assert m and m[1] in cli.ENTRY, f"stage {name}: its command is not an easycore subcommand: {st['cmd']}"
        code = {d for d in st.get("deps", []) if isinstance(d, str) and d.startswith("easycore")}
        if m[1] == "check":
            assert code == {"easycore"}, name
            continue
        assert code == set(), f"{name}: depends on {code}; use runs/code/{m[1]}.txt"
        assert f"runs/code/{m[1]}.txt" in st["deps"], f"stage {name} does not depend on runs/code/{m[1]}.txt"


def test_many_run_families_read_params_through_checks_files(tmp_path):
    """select / train / evaluate stages list no `params:` (their values would be copied into each of hundreds of
    dvc.lock entries) but depend on runs/params/<family>.json, which `check` (declaring every section) writes from
    the params: a changed value changes exactly the files of the families that read it, byte-stably."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert set(stages["check"]["params"]) == {"data", "runtime", "proxy", "coreset", "train", "eval", "report"}
    assert {f"runs/params/{f}.json" for f in deps.STAGE_PARAMS} <= set(stages["check"]["outs"])
    family = {"select": "select", "train": "train", "eval": "eval"}
    for name, st in stages.items():
        cmd = st["cmd"].split()[1]
        if cmd in family:
            assert "params" not in st, f"{name} lists params; depend on runs/params/<family>.json instead"
            want = "train_adaptive" if name == "train_adaptive" else family[cmd]
            assert f"runs/params/{want}.json" in st["deps"], name
    base = load_params(ROOT / "params.yaml")
    a = [p.read_bytes() for p in deps.write_params(base, tmp_path / "a")]
    assert a == [p.read_bytes() for p in deps.write_params(base, tmp_path / "b")]
    changed = {
        "train.epochs=3": {"train", "train_adaptive"}, "runtime.amp=false": {"train", "train_adaptive", "eval"},
        "coreset.acs.every=7": {"train_adaptive"}, "coreset.window=last:2": {"select"},
        "coreset.seed=5": {"select", "train_adaptive"}, "eval.pgd_steps=7": {"eval"}, "report.dir=x": set(),
    }
    families = [*deps.STAGE_PARAMS, *deps.DERIVED]
    # a method list edit: select only (the demo's one replicate computes DeepFool anyway: the reports read it)
    changed |= {"coreset.methods=[random,easycore,hard]": {"select"},
                "coreset.methods=[random,easycore,deepfool]": {"select"}}
    for override, fams in changed.items():
        new = load_params(ROOT / "params.yaml", [override])
        b = [p.read_bytes() for p in deps.write_params(new, tmp_path / "c")]
        assert {f for f, x, y in zip(families, a, b) if x != y} == fams, override


def test_a_proxy_stage_depends_on_which_replicates_compute_deepfool_not_on_the_methods():
    """The proxy computes DeepFool only for the replicates whose selections (or reports) read it: its stages depend
    on that derived list (runs/params/proxy.json), so adding a method that needs no DeepFool re-runs no proxy."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name in ("proxy", "proxy_transfer"):
        assert "runs/params/proxy.json" in stages[name]["deps"]
        assert not [p for p in stages[name]["params"] if p.startswith("coreset.")], name
    p = load_params(ROOT / "params-study.yaml")
    assert deps.family_values(p, "proxy")["deepfool_replicates"] == {"main": [0, 1, 2], "resnet_tiny": []}
    more = load_params(ROOT / "params-study.yaml", ["coreset.methods=[easycore,random,deepfool]"])
    assert deps.family_values(more, "proxy")["deepfool_replicates"]["main"] == list(range(10))


@pytest.mark.slow
def test_code_manifest_follows_the_import_closure(tmp_path, monkeypatch):
    """The manifest of a command lists every module its entry function can reach (function-level imports included,
    same-module helpers followed) and changes only when one of those modules changes."""
    proxy = deps.command_closure("proxy")
    assert {"easycore.core.train", "easycore.core.aign", "easycore.core.attacks", "easycore.pipeline.stages", "easycore.cli"} <= proxy
    assert not proxy & {"easycore.core.evaluate", "easycore.report", "easycore.core.coresets"}
    assert "easycore.core.evaluate" in deps.command_closure("eval")          # imported inside evaluate_run
    assert "easycore.core.acs" in deps.command_closure("train")              # imported inside train_run (adaptive)
    text = deps.manifest("proxy")
    assert [ln.split()[0] for ln in text.splitlines()] == sorted(deps._relpath(m) for m in proxy)
    paths = deps.write_manifests(tmp_path)
    before = {p.name: p.read_bytes() for p in paths}
    assert {p.name: p.read_bytes() for p in deps.write_manifests(tmp_path)} == before      # byte-stable
    real = deps._path
    fake = tmp_path / "evaluate.py"
    monkeypatch.setattr(deps, "_path", lambda m: fake if m == "easycore.core.evaluate" else real(m))
    src = (deps.PKG / "core" / "evaluate.py").read_text()
    # issue 25 item 8: comments, blank lines and docstrings are not code: no stage goes stale for them
    fake.write_text(src.replace('"""', '"""An edited docstring. ', 1).replace("\n\n", "\n\n# a comment\n", 3)
                    + "\n# an edit\n")
    assert {p.name: p.read_bytes() for p in deps.write_manifests(tmp_path)} == before
    fake.write_text(src + "\n_EDIT = 1\n")
    after = {p.name: p.read_bytes() for p in deps.write_manifests(tmp_path)}
    changed = {n for n in before if before[n] != after[n]}
    assert changed == {f"{c}.txt" for c in deps.STAGE_COMMANDS if "easycore.core.evaluate" in deps.command_closure(c)}
    assert "proxy.txt" not in changed and "eval.txt" in changed


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
    deps = {str(d.def_path) for st in repo.index.stages for d in st.deps}
    train = {p for p in outs if p.startswith("runs/train/")}
    evals = {p for p in outs if p.startswith("runs/eval/")}
    groups = runs.expected_groups(params)
    assert train == {str(g.train_dir()) for g in groups}      # one output folder per group
    assert evals == {str(g.eval_dir()) for g in groups}
    primary = set(params.coreset.methods)
    for g, members in groups.items():   # the primary groups run every replicate, the secondary ones the first few
        want = params.train.seeds if g.method in primary and g.scores == "main" else params.train.secondary_seeds()
        assert [r.seed for r in members] == list(want)
    for r in expected:
        assert runs.parse(r.key) == r and runs.parse(str(r.train_dir())) == r
        assert r.train_dir().parent == r.group.train_dir() and r.eval_dir().parent == r.group.eval_dir()
        assert not r.state_path().is_relative_to(r.group.train_dir())  # DVC removes the group folder, not this
        if r.selection_dir() is not None:   # replicate s trains on selection s (of its group's coreset folder)
            assert r.selection_dir().name == f"s{r.seed}"
            assert str(r.selection_dir().parent) in deps
            assert str(r.selection_dir().parent.parent) in outs    # made by the select stage of its proxy


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
    from easycore.core.methods import METHODS, direction_table_markdown

    out = subprocess.run([sys.executable, "-m", "easycore", "methods", "--markdown"], capture_output=True, text=True,
                         cwd=ROOT).stdout
    doc = (ROOT / "docs/pipeline.md").read_text()
    assert direction_table_markdown() in doc, "docs/pipeline.md's method table differs from `easycore methods`"
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
    from easycore.core.coresets import METHODS, budget, select

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


def test_bytecode_cache_is_not_a_dependency():
    """Issue 25 item 8: __pycache__ (written whenever PYTHONDONTWRITEBYTECODE is unset) does not make the stages that
    depend on easycore/ (check, the reports) look modified."""
    dvc_repo = pytest.importorskip("dvc.repo")
    with dvc_repo.Repo(str(ROOT)) as repo:
        ign = repo.dvcignore
        assert ign.is_ignored_dir(str(ROOT / "easycore" / "__pycache__"))
        assert ign.is_ignored_file(str(ROOT / "easycore" / "__pycache__" / "cli.cpython-311.pyc"))
        assert not ign.is_ignored_file(str(ROOT / "easycore" / "cli.py"))


def test_report_outputs_hold_no_wall_time(tmp_path):
    """Issue 25 item 8: captions and tables of the report carry no wall-clock values (a forced re-run of a report
    stage gives the same bytes); the train minutes go to runs/timings/report/ (report.timing_table)."""
    from easycore import report

    timings = tmp_path / "timings"
    run = runs.Run("main", "easycore", 0.3, "standard", 0)
    (timings / "train/main").mkdir(parents=True)
    (timings / "train/main" / f"{run.name}.json").write_text('{"seconds": 61.0}')
    res = [report.RunResult(run, "ok", {"clean": {"accuracy": 0.5, "n": 4}}, {"clean": np.ones(4, bool)})]
    params = load_params(ROOT / "params.yaml")
    cap = report.scale_caption(params, None)
    assert "wall time" not in cap and " min" not in cap
    assert "train_minutes" not in report.runs_frame(res).columns
    assert "train min/run" not in report.accuracy_table(res, params, "standard", ["clean"], n_boot=50).columns
    assert report.timing_table(res, timings).loc[("standard", "easycore"), "train min/run"] == round(61 / 60, 3)


# ----------------------------------------------------------------------------- issue 25 item 1: no shell injection
def test_stage_commands_interpolate_no_params_value():
    """A stage command line is run by a shell: a `${...}` in it would run whatever the params value holds (and
    `dvc repro -s` skips `check`). Matrix stages take their run from $DVC_STAGE instead (`--dvc`)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, st in stages.items():
        cmds = st["cmd"] if isinstance(st["cmd"], list) else [st["cmd"]]
        assert not any("${" in c or "$(" in c or "`" in c for c in cmds), (name, cmds)
        if "matrix" in st or "foreach" in st:
            assert all(c.strip().endswith("--dvc") for c in cmds), (name, cmds)


def test_every_matrix_stage_names_the_run_of_its_outputs():
    """`easycore <cmd> --dvc` under each stage DVC renders for the repo's params resolves, from the stage's name
    alone, to the proxy run / coresets / group whose outputs the stage declares."""
    dvc_repo = pytest.importorskip("dvc.repo")
    params = load_params(ROOT / "params.yaml")
    seen = 0
    with dvc_repo.Repo(str(ROOT)) as repo:
        for st in repo.index.stages:
            if "--dvc" not in (st.cmd or ""):
                continue
            outs, cmd = {str(o.def_path) for o in st.outs}, st.cmd.split()[1]
            if cmd == "proxy":
                want = str(runs.proxy_dir(runs.proxy_for_stage(params, st.addressing), 0).parent)
            elif cmd == "select":
                want = str(runs.ROOT / "coresets" / runs.scores_for_stage(params, st.addressing))
            else:
                g = runs.group_for_stage(params, st.addressing)
                want = str(g.train_dir() if cmd == "train" else g.eval_dir())
            assert want in outs, (st.addressing, want, outs)
            seen += 1
    assert seen >= len(runs.expected_groups(params)) * 2
