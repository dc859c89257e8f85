"""The whole DVC pipeline (dvc.yaml + notebooks) at a tiny synthetic scale, through a real `dvc repro` in a
temporary git + DVC repository. Checks that every declared output exists and parses."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent

if str(ROOT) not in sys.path:  # `benchmarks` is a folder of scripts beside the package, not installed
    sys.path.insert(0, str(ROOT))
from benchmarks._pipeline import TINY as _BENCH_TINY, merge, repo_params, write_params  # noqa: E402

TINY = merge(_BENCH_TINY, {"train": {"seeds": [0]}})   # the benchmarks' tiny pipeline, one seed


def tiny_params() -> dict:
    """The repo's params.yaml (DVC needs every declared key present) with the TINY overrides."""
    return repo_params(TINY)


def _run(cmd, cwd, env):
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return r


def _assert_clean(work, env) -> None:
    """`dvc status` lists nothing to re-run (data_source is always listed: it re-checks the data files)."""
    from easycore.data.sources import status_clean

    st = _run(["dvc", "status", "--json"], work, env).stdout
    assert status_clean(st), st


def _hashes(root: Path, paths) -> dict:
    import hashlib

    out = {}
    for p in paths:
        for f in sorted(q for q in (root / p).rglob("*") if q.is_file()) if (root / p).is_dir() else [root / p]:
            out[str(f.relative_to(root))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """The whole pipeline (dvc.yaml + notebooks + package), run once by `dvc repro` in a temp git + DVC repo."""
    if shutil.which("dvc", path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")) is None:
        pytest.skip("dvc is not installed (make setup)")
    work = tmp_path_factory.mktemp("pipeline") / "repo"
    work.mkdir()
    shutil.copy(ROOT / "dvc.yaml", work / "dvc.yaml")
    shutil.copytree(ROOT / "notebooks", work / "notebooks")
    shutil.copytree(ROOT / "dvc_plots", work / "dvc_plots")
    shutil.copytree(ROOT / "easycore", work / "easycore", ignore=shutil.ignore_patterns("__pycache__"))
    write_params(work, tiny_params())
    shutil.copy(ROOT / ".gitignore", work / ".gitignore")  # as in the repository: runs/ and data/prepared ignored
    env = dict(os.environ, PYTHONPATH=str(work), OMP_NUM_THREADS="2", MPLBACKEND="Agg",
               PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    env.pop("EASYCORE_DATA", None)
    _run(["git", "init", "-q"], work, env)
    _run(["dvc", "init", "-q"], work, env)
    _run(["dvc", "config", "core.analytics", "false"], work, env)
    _run(["dvc", "repro"], work, env)
    return work, env


@pytest.mark.slow
def test_dvc_repro_tiny(repo):
    work, env = repo
    # every declared out / metric / plot exists and parses
    lock = yaml.safe_load((work / "dvc.lock").read_text())["stages"]
    dvcyaml_stages = subprocess.run(["dvc", "stage", "list", "--name-only"], cwd=work, env=env, capture_output=True,
                                    text=True).stdout.split()
    assert set(dvcyaml_stages) == set(lock), f"stages not run: {set(dvcyaml_stages) - set(lock)}"
    import nbformat

    checked = 0
    for name, st in lock.items():
        for out in st.get("outs", []):
            p = work / out["path"]
            assert p.exists(), f"{name}: declared output {out['path']} is missing"
            files = sorted(p.rglob("*")) if p.is_dir() else [p]
            assert files, f"{name}: output folder {p} is empty"
            for f in files:
                if f.suffix == ".json":
                    json.loads(f.read_text())
                elif f.suffix in (".npz", ".npy"):
                    z = np.load(f, allow_pickle=False)
                    if f.suffix == ".npz":
                        assert z.files
                elif f.suffix == ".ipynb":
                    nb = nbformat.read(f, as_version=4)
                    nbformat.validate(nb)
                    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                              if o.get("output_type") == "error"]
                    assert not errors, f"{f.name} has error outputs: {errors[0].get('ename')}"
                elif f.suffix in (".md", ".csv", ".png"):
                    assert f.stat().st_size > 0, f"{f} is empty"
                checked += 1
    assert checked > 30
    for t in ("coresets/coresets_standard", "coresets/verdict", "transfer/transfer", "score_correlations/score_correlations",
              "hardness_vs_vulnerability/hardness_vs_vulnerability", "ablations/ablations", "aign_scores/aign_stability"):
        md = (work / "reports" / "tables" / f"{t}.md").read_text()
        assert "|" in md, f"{t}.md holds no table"
    m = json.loads((work / "runs/eval/main/easycore-0.5-standard/s0/metrics.json").read_text())
    assert 0 <= m["clean"]["accuracy"] <= 1 and "pgd2" in m and "eps4" in m and "robust" in m
    acs = json.loads((work / "runs/eval/none/acs_craig-0.5-standard/s0/metrics.json").read_text())
    assert 0 <= acs["robust"]["accuracy"] <= acs["clean"]["accuracy"]
    summary = json.loads((work / "reports/tables/coresets/summary_full.json").read_text())   # every cell
    assert set(summary["standard"]) == {"random", "easycore", "acs_craig", "full"}
    assert summary["standard"]["easycore"]["0.5"]["n_seeds"] == 1
    headline = json.loads((work / "reports/summary.json").read_text())                     # the one DVC metric
    assert set(headline) == {"standard_f0.5", "n_test", "n_replicates"}, headline
    assert set(headline["standard_f0.5"]) == {"diff", "verdict", "mde"}
    assert headline["standard_f0.5"]["verdict"] == 2 and headline["standard_f0.5"]["mde"] == -1   # not replicated
    # the executed notebooks carry their figures inline (papermill's kernel runs the inline backend)
    from test_reports import check_notebook_images
    for nb in sorted((work / "reports/notebooks").glob("*.ipynb")):
        check_notebook_images(nb)
    assert sorted(p.name for p in (work / "reports/plots").iterdir()) == [
        "robust_vs_eps_standard.csv", "robust_vs_fraction_standard.csv", "verdict.csv"]
    # the exported per-image outcomes alone give the same verdict as the run folders
    from easycore import report
    from easycore.config import load_params
    params = load_params(work / "params.yaml")
    cwd = os.getcwd()
    try:
        os.chdir(work)
        labels = report.attacked_labels(params)
        direct = report.verdict(report.load_results(params), params, labels=labels)
    finally:
        os.chdir(cwd)
    exported, _ = report.read_outcomes(work / "reports/outcomes.npz", params)
    np.testing.assert_array_equal(report.read_labels(work / "reports/outcomes.npz"), labels)
    pd.testing.assert_frame_equal(report.verdict(exported, params, labels=labels), direct)
    assert (direct[direct.family == "primary"].verdict == "not replicated (K=1)").all()
    # nothing left to do
    _assert_clean(work, env)


@pytest.mark.slow
def test_remote_round_trip_and_reports_from_a_fresh_clone(repo):
    """Issue 33 items 3-4. The repository's own .dvc/config (its default remote: ../../easycore-dvc-remote relative
    to .dvc/, a folder beside the repository) in the tiny pipeline: `dvc push --run-cache`; a fresh `git clone`,
    `dvc pull --run-cache`: `dvc status` clean and every input of every report stage present, byte-identical;
    `easycore reports` (make reports) re-executes all six notebooks there and changes no committed file; then
    `dvc exp run -S coreset.p=inf` re-runs only check, the selections and what follows them (no prepare, proxy,
    full-data or ACS training)."""
    import re
    import time

    from benchmarks._pipeline import stages_ran

    work, env = repo
    shutil.copy(ROOT / ".dvc" / "config", work / ".dvc" / "config")
    _run(["git", "add", "-A"], work, env)       # the committed state, as in the repository (runs/, data/: DVC's)
    _run(["git", "commit", "-qm", "tiny pipeline"], work, env)
    remote = work.parent / "easycore-dvc-remote"
    assert not remote.exists()
    t0 = time.monotonic()
    _run(["dvc", "push", "--run-cache"], work, env)
    t_push = time.monotonic() - t0
    files = [f for f in remote.rglob("*") if f.is_file()]
    clone = work.parent / "clone"
    _run(["git", "clone", "-q", str(work), str(clone)], work.parent, env)
    cenv = dict(env, PYTHONPATH=str(clone))
    assert not (clone / "runs").exists() and not (clone / "data").exists()
    t0 = time.monotonic()
    _run(["dvc", "pull", "--run-cache"], clone, cenv)
    t_pull = time.monotonic() - t0
    print(f"remote: {sum(f.stat().st_size for f in files) / 1e6:.2f} MB in {len(files)} files; "
          f"push --run-cache {t_push:.1f} s, pull --run-cache {t_pull:.1f} s")
    _assert_clean(clone, cenv)
    lock = yaml.safe_load((clone / "dvc.lock").read_text())["stages"]
    inputs = sorted({d["path"] for name, st in lock.items() if name.startswith("report_") for d in st["deps"]
                     if d["path"].startswith(("runs/", "data/"))})
    assert len(inputs) >= 6 and all((clone / p).exists() for p in inputs), inputs
    assert _hashes(clone, inputs) == _hashes(work, inputs)

    t0 = time.monotonic()
    out = _run(["easycore", "reports", "-q"], clone, cenv).stdout
    print(f"easycore reports: {time.monotonic() - t0:.0f} s")
    assert out.count("notebook: ") == 6, out
    assert _run(["git", "status", "--porcelain"], clone, cenv).stdout == ""    # the same bytes as committed

    r = _run(["dvc", "exp", "run", "-S", "coreset.p=inf"], clone, cenv)
    ran = stages_ran(r.stdout)
    assert "select@main" in ran, r.stdout[-3000:]
    follows = ("check", "data_source", "select", "train@", "train_survey@", "train_transfer@", "evaluate@",
               "evaluate_survey@", "evaluate_transfer@", "autoattack", "report_")
    assert all(s.startswith(follows) for s in ran), sorted(ran)
    assert "train@main-easycore-0.5-standard" in ran and "train@main-random-0.5-standard" not in ran, sorted(ran)


@pytest.mark.slow
def test_stages_rerun_give_byte_identical_outputs(repo):
    """prepare, proxy and one train stage forced to run again: the same bytes, dvc.lock unchanged, nothing stale."""
    work, env = repo
    outs = ["data/prepared", "runs/proxy/main", "runs/train/main/easycore-0.5-standard", "runs/coresets"]
    before, lock = _hashes(work, outs), (work / "dvc.lock").read_text()
    for stage in ("prepare", "proxy@main", "train@main-easycore-0.5-standard"):
        _run(["dvc", "repro", "-f", "-s", stage], work, env)
    after = _hashes(work, outs)
    assert {k for k in before if before[k] != after.get(k)} == set()
    assert (work / "dvc.lock").read_text() == lock
    _assert_clean(work, env)


@pytest.mark.slow
def test_injected_param_runs_nothing(repo):
    """A param value with shell syntax stops `dvc repro` at the check stage: the injected command never runs and
    no published output is removed."""
    work, env = repo
    params = (work / "params.yaml").read_text()
    table = (work / "reports/tables/coresets/coresets_standard.md").read_bytes()
    bad = tiny_params()
    bad["coreset"]["methods"] = ["random", "$(touch INJECTED)easycore"]
    bad["proxy"]["transfer_models"] = ["`touch INJECTED2`resnet_tiny"]
    try:
        (work / "params.yaml").write_text(yaml.safe_dump(bad))
        r = subprocess.run(["dvc", "repro"], cwd=work, env=env, capture_output=True, text=True)
        assert r.returncode != 0
        assert not (work / "INJECTED").exists() and not (work / "INJECTED2").exists()
        assert (work / "reports/tables/coresets/coresets_standard.md").read_bytes() == table
    finally:
        (work / "params.yaml").write_text(params)


@pytest.mark.slow
def test_report_shows_a_missing_run(repo, monkeypatch):
    """One run's metrics deleted: the coreset table names it as missing instead of dropping it silently."""
    from easycore import report
    from easycore.config import load_params

    work, env = repo
    victim = work / "runs/eval/main/random-0.5-standard/s0/metrics.json"
    saved = victim.read_bytes()
    monkeypatch.chdir(work)
    try:
        victim.unlink()
        params = load_params("params.yaml")
        results = report.load_results(params)
        table = report.accuracy_table(results, params, "standard", ["clean", "robust"], n_boot=200)
        acc = [c for c in table.columns if " @ f=" in c and not c.startswith("passes")]   # not the cost column
        assert "passes vs full @ f=0.5" in table.columns
        assert table.loc["random", acc].str.contains("missing (not evaluated)", regex=False).all(), table
        assert not table.loc["easycore", acc].str.contains("missing").any()
        ver = report.verdict(results, params)
        assert not ver.comparator.astype(str).str.contains("best other: random").any()   # never crowned unrun
        prim = ver[ver.family == "primary"]
        assert (prim.verdict == "missing runs (random)").all() and prim.get("diff", pd.Series(dtype=float)).isna().all()
    finally:
        victim.write_bytes(saved)


@pytest.mark.slow
def test_a_new_method_runs_its_groups_not_the_study(repo):
    """A method added to coreset.methods: `dvc repro` re-runs check and the select stage (whose list of coresets
    changed; the existing coresets come out byte-identical), trains and evaluates the new method's group, and
    re-runs no other training or evaluation stage; `dvc status` is clean afterwards. (Near the end of this module:
    it leaves the repo with the extra method.)"""
    import re

    work, env = repo
    p = yaml.safe_load((work / "params.yaml").read_text())
    p["coreset"]["methods"] = p["coreset"]["methods"] + ["hard"]
    (work / "params.yaml").write_text(yaml.safe_dump(p))
    before = _hashes(work, ["runs/coresets/main/easycore-0.5", "runs/train/main/easycore-0.5-standard"])
    # DVC expanded the old lists: the check stage rewrites matrix.yaml and stops before anything else runs
    r = subprocess.run(["dvc", "repro"], cwd=work, env=env, capture_output=True, text=True)
    assert r.returncode != 0 and "matrix.yaml is rewritten: run `dvc repro` again" in r.stdout + r.stderr, r.stdout
    assert re.findall(r"^Running stage '([^']+)'", r.stdout, re.M) == ["check"], r.stdout
    r = _run(["dvc", "repro"], work, env)
    ran = set(re.findall(r"^Running stage '([^']+)'", r.stdout, re.M))
    trained = {s for s in ran if s.startswith(("train", "evaluate"))}
    assert trained == {"train@main-hard-0.5-standard", "evaluate@main-hard-0.5-standard"}, sorted(ran)
    assert "select@main" in ran and not ran & {"prepare", "proxy@main"}
    assert _hashes(work, ["runs/coresets/main/easycore-0.5", "runs/train/main/easycore-0.5-standard"]) == before
    _assert_clean(work, env)


# The README's view of an experiment (section "Ablations, experiments and the DVC views"): the changed params and the
# headline metric; every changed dependency path (runs/..., data/..., easycore) is dropped.
EXP_SHOW_DROP = "^(runs|data|notebooks|easycore|dvc_plots)"


def _table_width(out: str) -> int:
    return max((len(ln.rstrip()) for ln in out.splitlines() if ln.strip()), default=0)


@pytest.mark.slow
def test_exp_show_fits_160_columns(repo):
    """Issue 22: after `dvc exp run -S coreset.p=inf` (the README's ablation), the README's
    `dvc exp show --only-changed --drop '<EXP_SHOW_DROP>'` fits in 160 columns (the metric is the headline only:
    easycore/report/headline.py). Plain --only-changed is wider: every changed dependency path is a column. Runs last: it
    commits the workspace and leaves the experiment's results in it."""
    work, env = repo
    readme = (ROOT / "README.md").read_text()
    assert f"dvc exp show --only-changed --drop '{EXP_SHOW_DROP}'" in readme      # the documented command, verbatim
    _run(["git", "add", "-A"], work, env)
    _run(["git", "commit", "-qm", "tiny pipeline", "--allow-empty"], work, env)
    _run(["dvc", "exp", "run", "-S", "coreset.p=inf"], work, env)
    wide = dict(env, COLUMNS="1000")                       # no squeezing by the terminal: the table's own width
    out = _run(["dvc", "exp", "show", "--only-changed", "--drop", EXP_SHOW_DROP, "--no-pager"], work, wide).stdout
    plain = _run(["dvc", "exp", "show", "--only-changed", "--no-pager"], work, wide).stdout
    width, plain_width = _table_width(out), _table_width(plain)
    print(f"dvc exp show --only-changed: {plain_width} columns; with --drop: {width}")
    assert "coreset.p" in out and "inf" in out, out     # (a headline metric shows where the experiment changed it)
    assert width <= 160, f"dvc exp show --only-changed --drop ... is {width} columns wide:\n{out}"
    assert plain_width > width     # the dropped columns were there: the --drop is what makes it fit
