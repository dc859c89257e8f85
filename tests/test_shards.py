"""The GPU study in shards (easycore/shards.py; issue 23), rehearsed on the CPU at a tiny size: a shard stops at its
budget (a job past the deadline is killed and logged; a job whose logged estimate does not fit is left for later),
the next shard runs exactly the missing jobs, and the report counts replicates and recomputes the verdict from what
is committed (interim on the complete replicates)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from easycore import runs, shards
from easycore.config import load_params
from easycore.report import RunResult, read_outcomes

ROOT = Path(__file__).resolve().parent.parent


def tiny_gpu_profile(tmp: Path, **train) -> Path:
    """params-gpu.yaml at a tiny size: synthetic data, cnn_tiny, 1 epoch, 2 replicates, one mode and fraction,
    no survey / ACS, one-step attacks, no AutoAttack or sanity checks (their own tests cover them)."""
    p = yaml.safe_load((ROOT / "params-gpu.yaml").read_text())
    p["data"].update(dataset="synthetic", n_per_class=6, test_n_per_class=3)
    p["runtime"].update(device="cpu")
    p["proxy"].update(model="cnn_tiny", epochs=1, batch_size=16, deepfool_steps=1)
    p["proxy"]["aign"].update(batch_size=64)
    p["coreset"].update(fractions=[0.5], survey_methods=[], survey_fractions=[], adaptive=[], score_epochs=1)
    p["train"].update(model="cnn_tiny", epochs=1, batch_size=16, modes=["standard"], seeds=[0, 1], survey_seeds=1,
                      eval_every=0, **train)
    p["eval"].update(n_test=30, batch_size=30, pgd_steps=1, strong=[], grid_steps=1, sanity=False,
                     autoattack_modes=[], eps_grid=[0.0, 2 / 255, 8 / 255])
    p["report"].update(dir="out")                 # relative to the folder the shard runs in (tmp)
    path = tmp / "params-tiny-gpu.yaml"
    path.write_text(yaml.safe_dump(p, sort_keys=False))
    return path


def test_the_shipped_gpu_profiles_are_valid_and_plan_replicates_first():
    p = load_params(ROOT / "params-gpu.yaml")
    jobs = shards.plan(p)
    assert len({j.key for j in jobs}) == len(jobs)
    assert {j.run for j in jobs if j.kind == "run"} == set(runs.expected_runs(p))
    # replicate by replicate: every job of replicate 0 before any of replicate 1; its scores first, then the
    # full-data reference, then the primary pair
    seeds = [j.seed for j in jobs]
    assert seeds == sorted(seeds)
    first = [j for j in jobs if j.seed == 0]
    assert first[0].key == "scores/s0"
    kinds = [shards._priority(p, j.run) for j in first[1:]]
    assert kinds == sorted(kinds) and kinds[0] == 0
    assert p.eval.n_test == 10000 and p.data.n_per_class is None and p.coreset.fractions == [0.1, 0.3]
    assert set(p.train.modes) == {"standard", "trades"} and len(p.train.seeds) >= 10
    check = load_params(ROOT / "params-gpu-check.yaml")
    only = shards.plan(check, "none/full-*")
    assert [j.key for j in only] == ["run/none/full-1.0-fgsm_rs-s0"]      # no proxy needed
    assert check.train.model == "preact_resnet18" and check.train.epochs == 15 and check.eval.pgd_steps == 50
    assert check.eval.restarts == 10 and check.eval.autoattack_n >= 1000 and check.eval.n_test == 10000


def test_plan_hash_ignores_where_and_how_many_but_not_what():
    p = load_params(ROOT / "params-gpu.yaml")
    h = shards.plan_hash(p)
    assert shards.plan_hash(load_params(ROOT / "params-gpu.yaml", ["data.root=/elsewhere", "report.dir=x",
                                                                    "runtime.concurrent=2"])) == h
    assert shards.plan_hash(load_params(ROOT / "params-gpu.yaml", ["train.epochs=11"])) != h
    assert shards.plan_hash(load_params(ROOT / "params-gpu.yaml", ["eval.n_test=5000"])) != h


def test_estimates_come_from_this_device_and_scale_with_the_fraction():
    job = shards.Job("run", 0, runs.Run("main", "easycore", 0.3, "trades", 0))
    kind = list(shards._kind(job))
    hist = [{"job": "run/main/random-0.1-trades-s0", "kind": kind, "size": 0.1, "status": "ok", "seconds": 10.0,
             "device": "gpu A", "plan": "p"},
            {"job": "run/main/random-0.1-trades-s1", "kind": kind, "size": 0.1, "status": "ok", "seconds": 99.0,
             "device": "gpu B", "plan": "p"}]
    assert shards.estimate(job, hist, "gpu A", "p") == pytest.approx(30.0)      # 3x the fraction
    assert shards.estimate(job, hist, "gpu C", "p") is None                     # nothing known there
    assert shards.estimate(job, hist, "gpu A", "q") is None                     # nor for another plan
    small = shards.Job("run", 0, runs.Run("main", "easycore", 0.05, "trades", 0))
    assert shards.estimate(small, hist, "gpu A", "p") == pytest.approx(10.0)     # never below what a larger one took
    killed = hist + [{"job": job.key, "kind": kind, "size": 0.3, "status": "timeout", "seconds": 55.0,
                      "device": "gpu A", "plan": "p"}]
    assert shards.estimate(job, killed, "gpu A", "p") == pytest.approx(55.0)     # at least as long as the killed try
    assert shards.estimate(shards.Job("run", 0, runs.Run("main", "easycore", 0.3, "standard", 0)), hist,
                           "gpu A", "p") is None                                # another mode is another kind


def test_complete_replicates_and_counts():
    p = load_params(ROOT / "params-gpu.yaml", ["train.seeds=[0,1,2]", "train.survey_seeds=1"])
    expected = runs.expected_runs(p)
    have = {r for r in expected if r.seed in (0, 2)} | {r for r in expected if r.seed == 1 and r.method != "random"}
    res = [RunResult(r, "ok" if r in have else "missing (not yet run)") for r in expected]
    assert shards.complete_replicates(p, res) == [0]          # replicate 1 lacks random: a prefix stops there
    counts = shards.replicate_counts(p, res).set_index(["mode", "method", "fraction"])
    assert counts.loc[("trades", "random", 0.1), "replicates"] == "2 of 3"
    assert counts.loc[("trades", "random", 0.1), "seeds"] == "0, 2"
    assert counts.loc[("trades", "easycore", 0.3), "replicates"] == "3 of 3"
    assert counts.loc[("standard", "full", 1.0), "replicates"] == "1 of 1"


def _shard(params: Path, cwd: Path, *args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    env.pop("EASYCORE_DATA", None)
    return subprocess.run([sys.executable, "-m", "easycore", "shard", "--params", str(params), "-q", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _log(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]


def test_shards_stop_at_the_budget_resume_the_missing_runs_and_report_replicates(tmp_path, monkeypatch):
    params = tiny_gpu_profile(tmp_path)
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path)  # (report.dir is relative: out/ here, as the shard processes see it)
    p = load_params(params)
    jobs = shards.plan(p)
    assert [j.key for j in jobs] == ["scores/s0", "run/none/full-1.0-standard-s0", "run/main/easycore-0.5-standard-s0",
                                     "run/main/random-0.5-standard-s0", "scores/s1",
                                     "run/main/easycore-0.5-standard-s1", "run/main/random-0.5-standard-s1"]

    # 1. a budget that ends inside a job (here a proxy of 400 epochs): it is killed at the deadline and logged;
    #    nothing of it is committed
    slow = tmp_path / "slow.yaml"
    y = yaml.safe_load(params.read_text())
    y["proxy"]["epochs"] = 400
    slow.write_text(yaml.safe_dump(y, sort_keys=False))
    r = _shard(slow, tmp_path, "--budget", str(shards.RESERVE_S + 8))
    assert r.returncode == 0, r.stderr
    assert _log(out)[-1]["status"] == "timeout" and _log(out)[-1]["job"] in ("prepare", "scores/s0")
    assert not (out / "selections").exists() and "0 of 5 runs" in r.stdout

    # 2. replicate 0 only (--only), no budget: runs to the end of what it was given
    r = _shard(params, tmp_path, "--only", "*-s0")
    assert r.returncode == 0, r.stderr
    assert [h["job"] for h in _log(out)[1:] if h["status"] == "ok" and h["job"] != "prepare"] == ["scores/s0",
                                                                     "run/none/full-1.0-standard-s0",
                                                                     "run/main/easycore-0.5-standard-s0",
                                                                     "run/main/random-0.5-standard-s0"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["replicates_complete"] == 1 and summary["replicates_planned"] == 2 and summary["interim"]
    assert summary["runs_done"] == 3 and summary["runs_planned"] == 3       # the report covers the runs --only chose
    assert "runs *-s0" in (out / "README.md").read_text()
    assert "INTERIM: 1 of 2 planned replicates" in (out / "README.md").read_text()
    counts = shards.replicate_counts(p, shards.collect(p, out).results).set_index(["mode", "method", "fraction"])
    assert counts.loc[("standard", "random", 0.5), "replicates"] == "1 of 2"
    assert (out / "selections" / "s0" / "easycore-0.5.npy").exists()
    before = {f: f.read_bytes() for f in (out / "runs").rglob("*.npz")}

    # 3. a shard that knows (from the log of this device) the runs take longer than its budget: it runs the
    #    replicate's scores (which fit) and leaves the runs for later
    dev = _log(out)[-1]["device"]
    shards.append_log(out, {"job": "run/main/x-0.5-standard-s9", "kind": ["run", "standard", "static"], "size": 0.5,
                            "status": "ok", "seconds": 1e6, "device": dev, "plan": shards.plan_hash(p)})
    r = _shard(params, tmp_path, "--budget", "200")
    assert r.returncode == 0, r.stderr
    assert "later: run/main/easycore-0.5-standard-s1 (needs ~1000000 s" in r.stdout
    assert [h["job"] for h in _log(out)[-1:]] == ["scores/s1"]      # prepared data kept in the work folder
    assert not shards.is_done(jobs[5], out, shards.plan_hash(p))

    # 4. the next shard (no budget) runs exactly the missing runs; the committed ones are not touched
    (out / "log.jsonl").write_text("".join(json.dumps(h) + "\n" for h in _log(out) if h["seconds"] < 1e6))
    r = _shard(params, tmp_path)
    assert r.returncode == 0, r.stderr
    assert [h["job"] for h in _log(out)[-2:]] == ["run/main/easycore-0.5-standard-s1",
                                                  "run/main/random-0.5-standard-s1"]
    assert {f: f.read_bytes() for f in before} == before
    summary = json.loads((out / "summary.json").read_text())
    assert summary["replicates_complete"] == 2 and not summary["interim"] and summary["n_replicates"] == 2
    assert "standard_f0.5" in summary
    assert "final (all planned replicates)" in (out / "README.md").read_text()
    counts = shards.replicate_counts(p, shards.collect(p, out).results).set_index(["mode", "method", "fraction"])
    assert counts.loc[("standard", "easycore", 0.5), "replicates"] == "2 of 2"

    # the committed run files are outcome files: per-image bools of the attacked images, labels, metrics
    res, _ = read_outcomes(out / "runs" / "main" / "easycore-0.5-standard-s1.npz")
    assert res[0].run == runs.Run("main", "easycore", 0.5, "standard", 1)
    assert res[0].outcomes["robust"].dtype == np.bool_ and len(res[0].outcomes["robust"]) == 30

    # 5. a file of another plan (the params changed) is ignored, not mixed in
    changed = tmp_path / "changed.yaml"
    y = yaml.safe_load(params.read_text())
    y["train"]["epochs"] = 2
    changed.write_text(yaml.safe_dump(y, sort_keys=False))
    q = load_params(changed)
    assert shards.plan_hash(q) != shards.plan_hash(p)
    got = shards.collect(q, out)
    assert not any(r.ok for r in got.results) and len(got.other_plan) == 5
    r = _shard(changed, tmp_path, "--report-only")
    assert r.returncode == 0, r.stderr
    assert "0 of 5 runs" in r.stdout


def test_full_data_runs_are_set_beside_the_published_anchor():
    from easycore.report import RunResult

    p = load_params(ROOT / "params-gpu-check.yaml")
    run = runs.Run("none", "full", 1.0, "fgsm_rs", 0)
    metrics = {"clean": {"accuracy": 0.85, "n": 10000}, "robust": {"accuracy": 0.45, "n": 10000}}
    hist = [{"epoch": 1, "train_acc": 0.3, "loss": 2.0}, {"epoch": 2, "train_acc": 0.4, "loss": 1.8, "test_acc": 0.5}]
    got = shards.Committed([RunResult(run, "ok", metrics, {})], {run.key: {"robust": np.ones(4, bool),
                                                                            "robust_aa": np.array([1, 1, 0, 0], bool)}},
                           None, {run.key: {"train": {"model": "preact_resnet18"}, "history": hist}}, [])
    log = [{"job": f"run/{run.key}", "status": "ok", "seconds": 600.0, "device": "NVIDIA H200"}]
    row = shards.anchor_table(p, got, log).iloc[0]
    assert row["clean %"] == 85.0 and row["robust % (worst case)"] == 45.0
    assert row["published clean / robust %"] == "86.06 / 46.06" and row["diff clean / robust (points)"] == "-1.06 / -1.06"
    assert row["AutoAttack % (n)"] == "50.00 (4)" and row["minutes (train + eval)"] == 10.0
    assert row["published minutes"] == 12.0 and row["device"] == "NVIDIA H200"
    curve = shards.curve_table(got)
    assert list(curve["full-1.0-fgsm_rs-s0: train / test %"]) == ["30.0 / -", "40.0 / 50.0"]


def test_the_device_script_runs_a_shard_and_packs_the_study(tmp_path):
    """scripts/gpu-shard.sh as the project's device checks call it (here on the CPU): a shard, then report.dir
    packed into $OUT/shard.tar.gz."""
    import tarfile

    params = tiny_gpu_profile(tmp_path)
    (tmp_path / "ship").mkdir()
    env = dict(os.environ, OUT=str(tmp_path / "ship"), PYTHON=sys.executable, OMP_NUM_THREADS="1")
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-shard.sh"), str(params), "300", "--only", "none/full-*"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    with tarfile.open(tmp_path / "ship" / "shard.tar.gz") as t:
        names = set(t.getnames())
    assert {"out/runs/none/full-1.0-standard-s0.npz", "out/README.md", "out/summary.json", "out/log.jsonl"} <= names
