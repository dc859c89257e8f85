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
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent

TINY = {
    "data": {"dataset": "synthetic", "n_per_class": 16, "test_n_per_class": 4, "seed": 0},
    "proxy": {"model": "cnn_tiny", "epochs": 2, "batch_size": 64, "deepfool_steps": 1,
              "aign": {"mode": "both", "batch_size": 256}, "transfer_model": "cnn_tiny"},
    "coreset": {"methods": ["random", "easycore"], "fractions": [0.5], "score_epochs": 1},
    "train": {"model": "cnn_tiny", "epochs": 1, "batch_size": 64, "modes": ["standard"], "seeds": [0],
              "attack": {"steps": 1}},
    "eval": {"n_test": 20, "pgd_steps": 2, "sanity": False},
    "report": {"grid_per_class": 2, "formats": ["png"]},
}


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(base.get(k) or {}, v) if isinstance(v, dict) else v
    return out


def tiny_params() -> dict:
    """The repo's params.yaml (DVC needs every declared key present) with the TINY overrides."""
    return _merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY)


def _run(cmd, cwd, env):
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return r


@pytest.mark.slow
def test_dvc_repro_tiny(tmp_path):
    if shutil.which("dvc", path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")) is None:
        pytest.skip("dvc is not installed (pip install -e .[pipeline])")
    work = tmp_path / "repo"
    work.mkdir()
    shutil.copy(ROOT / "dvc.yaml", work / "dvc.yaml")
    shutil.copytree(ROOT / "notebooks", work / "notebooks")
    shutil.copytree(ROOT / "easycore", work / "easycore", ignore=shutil.ignore_patterns("__pycache__"))
    (work / "params.yaml").write_text(yaml.safe_dump(tiny_params()))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="2", MPLBACKEND="Agg",
               PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    _run(["git", "init", "-q"], work, env)
    _run(["dvc", "init", "-q"], work, env)
    _run(["dvc", "config", "core.analytics", "false"], work, env)
    _run(["dvc", "repro"], work, env)

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
    for t in ("coreset_standard", "transfer", "score_correlations", "hardness_vs_vulnerability", "ablations", "aign_stability"):
        md = (work / "reports" / "tables" / f"{t}.md").read_text()
        assert "|" in md, f"{t}.md holds no table"
    m = json.loads((work / "runs/eval/easycore-0.5-standard-s0/metrics.json").read_text())
    assert 0 <= m["clean"]["accuracy"] <= 1 and "pgd2" in m
    # nothing left to do
    st = _run(["dvc", "status", "-q"], work, env)
    assert st.stdout.strip() == "", st.stdout
