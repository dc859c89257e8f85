"""A study in shards: short, preemptible slices of GPU time that accumulate (or one long run on one's own box).

    easycore shard --params params-gpu.yaml [--budget 480] [--only 'none/full-*'] [--report-only]

A study (a params file) is a list of jobs (`plan`), in the order that completes whole replicates first:
  prepare        the prepared data, in the work folder (once per machine; not committed)
  scores/s<k>    replicate k's proxy (AIGN) and every selection made from it; the selections (indices) are committed
  run/<key>      one training run on its replicate's committed selection, its evaluation (and AutoAttack where the
                 verdict needs it); its per-image outcomes (numbers and booleans only) are committed
A shard runs the jobs whose outputs are not yet under the output folder (`report.dir`, e.g. reports/gpu/), each in
its own process in the work folder (runs/shards/<params stem>/, ignored by git), and starts a job only when its
estimate (from the times this device kind took for that kind of job before, `log.jsonl`) fits in what is left of
the budget; a job with no estimate yet runs with what is left as its time limit and is killed at the deadline (its
time is logged, so the next shard knows it needs more). With no budget the shard runs to the end. Whatever the
shard finished is in the output folder when it ends; the next shard (on a fresh machine, after the output folder was
committed) starts with the jobs that are missing. On the same machine a killed training run resumes from its last
epoch (its resume point lies in the work folder).

Every committed file carries the study's plan hash (the params that decide results: everything but report, the data
location and how many processes run): a file from another plan is never mixed in (it is reported and ignored).
The report (`report_shards`, run at the end of every shard) recomputes the verdict from whatever is committed: the
primary family on the replicates complete for every primary cell (an interim verdict, labelled with K of the planned
replicates, until all are in), the secondary rows (those with a missing run say so), and the count of replicates
each cell holds.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from . import runs
from .config import Params, fraction_name, load_params
from .store import ArtifactError, atomic_path, read_json, write_json

log = logging.getLogger("easycore")

RESERVE_S = 20.0         # of the budget, kept for the report at the end of a shard
KILL_GRACE_S = 10.0
LOG = "log.jsonl"


# ----------------------------------------------------------------------------- the plan
_NOT_RESULTS = {"data": ("root", "download", "workers"), "runtime": ("device", "concurrent")}


def _digest(d: dict) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _results_part(section: str, d: dict) -> dict:
    """A params section without what does not change a number (where the data lie, how many processes run)."""
    return {k: v for k, v in d.items() if k not in _NOT_RESULTS.get(section, ())}


def plan_hash(params: Params) -> str:
    """The hash of what decides a study's results: every param except report.*, where the data lie and how many
    processes / workers run (those do not change a number)."""
    return _digest({k: _results_part(k, v) for k, v in dataclasses.asdict(params).items() if k != "report"})


def data_hash(params: Params) -> str:
    """The hash of what decides the prepared data (the work folder re-prepares when it changes)."""
    return _digest(_results_part("data", dataclasses.asdict(params.data)))


PREPARED_MARK = Path("data/prepared/shard-data.json")


@dataclass(frozen=True)
class Job:
    kind: str                      # prepare | scores | run
    seed: int = 0
    run: Optional[runs.Run] = None

    @property
    def key(self) -> str:
        return {"prepare": "prepare", "scores": f"scores/s{self.seed}"}.get(self.kind) or f"run/{self.run.key}"

    @staticmethod
    def parse(key: str) -> "Job":
        if key == "prepare":
            return Job("prepare")
        if key.startswith("scores/s") and key[len("scores/s"):].isdigit():
            return Job("scores", int(key[len("scores/s"):]))
        if key.startswith("run/"):
            r = runs.parse(key[len("run/"):])
            return Job("run", r.seed, r)
        raise ValueError(f"{key!r} is not a shard job (prepare, scores/s<k>, run/<run key>)")


def _priority(params: Params, r: runs.Run) -> int:
    pc = params.report.primary
    if r.method == runs.FULL:
        return 0        # the full-data reference: the primary eps rule reads it
    if r.method in (pc.method, pc.comparator) and r.fraction in params.coreset.fractions:
        return 1
    return 2


def plan(params: Params, only: Optional[str] = None) -> list[Job]:
    """The study's jobs (without `prepare`), replicate by replicate in train.seeds' order: the replicate's scores,
    then its full-data reference, its primary runs, its secondary runs (each in dvc.yaml's order). `only`: a glob on
    run keys ('<scores>/<method>-<fraction>-<mode>-s<seed>'): only those runs (and the scores they need)."""
    rs = [r for r in runs.expected_runs(params) if only is None or fnmatch.fnmatchcase(r.key, only)]
    bad = sorted({r.scores for r in rs} - {"main", runs.NONE})
    if bad:
        from .config import ConfigError

        raise ConfigError(f"a sharded study runs the main proxy's coresets only; transfer proxies {bad} go through "
                          f"dvc repro (set proxy.transfer_models: [] or coreset.transfer_methods: [])")
    out: list[Job] = []
    for s in params.train.seeds:
        mine = [r for r in rs if r.seed == s]
        if any(r.scores == "main" for r in mine):
            out.append(Job("scores", s))
        out += [Job("run", s, r) for r in sorted(mine, key=lambda r: _priority(params, r))]   # stable: dvc order
    return out


# ----------------------------------------------------------------------------- committed outputs
def run_file(out: Path, run: runs.Run) -> Path:
    return Path(out) / "runs" / run.scores / f"{run.name}.npz"


def selection_file(out: Path, method: str, fraction: float, seed: int) -> Path:
    return Path(out) / "selections" / f"s{int(seed)}" / f"{method}-{fraction_name(fraction)}.npy"


def scores_file(out: Path, seed: int) -> Path:
    """Written last by a scores job: the replicate's selections are all there."""
    return Path(out) / "selections" / f"s{int(seed)}" / "proxy.json"


def _meta_of(path: Path) -> dict:
    from .store import load_arrays

    return load_arrays(path)[1]


def is_done(job: Job, out: Path, plan_id: str) -> bool:
    """Is the job's committed output there, readable and of this plan?"""
    try:
        if job.kind == "prepare":
            return False
        if job.kind == "scores":
            return (read_json(scores_file(out, job.seed)) or {}).get("plan") == plan_id
        return _meta_of(run_file(out, job.run)).get("plan") == plan_id
    except (ArtifactError, OSError, ValueError):
        return False


# ----------------------------------------------------------------------------- the log and estimates
def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    import platform

    return f"cpu {platform.machine()} x{os.cpu_count()}"


def read_log(out: Path) -> list[dict]:
    path = Path(out) / LOG
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue                      # a line cut by a killed writer
    return rows


def append_log(out: Path, row: dict) -> None:
    path = Path(out) / LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")


def _size(job: Job) -> float:
    """The relative cost of a run job within its kind: the fraction of the training set it trains on."""
    return job.run.fraction if job.run is not None else 1.0


def _kind(job: Job) -> tuple:
    if job.kind != "run":
        return (job.kind,)
    from .methods import METHODS

    return ("run", job.run.mode, METHODS.get(job.run.method).kind)


def estimate(job: Job, history: Sequence[dict], device: str, plan_id: str) -> Optional[float]:
    """Seconds the job should take on `device`, from the log of this plan: the longest time a job of its kind took (a
    run: same mode and method kind, scaled up by the ratio of fractions when this one trains on more), and at least
    as long as an earlier try of this very job that was killed. None when nothing of its kind has finished on this
    device for this plan (another plan may train longer or on more data)."""
    mine = [h for h in history if h.get("device") == device and h.get("plan") == plan_id]
    kind = list(_kind(job))
    est = None
    for h in mine:
        if h.get("status") == "ok" and h.get("kind") == kind:
            s = float(h["seconds"]) * max(1.0, _size(job) / max(float(h.get("size", 1.0)), 1e-9))
            est = s if est is None else max(est, s)
    tried = [float(h["seconds"]) for h in mine if h.get("job") == job.key and h.get("status") != "ok"]
    if tried:
        est = max([est or 0.0, *tried])
    return est


# ----------------------------------------------------------------------------- one shard
@dataclass
class ShardResult:
    done: list[str]                      # jobs finished by this shard
    skipped: dict                        # job -> why (does not fit, needs its scores)
    failed: dict                         # job -> status
    missing: int                         # jobs still missing after this shard
    seconds: float


def work_dir(params_path: Path) -> Path:
    return Path("runs") / "shards" / Path(params_path).stem


def _absolute_data(params: Params) -> list[str]:
    """--set overrides that pin the data root to an absolute path (the jobs run in the work folder). The value is
    JSON-quoted: --set values are YAML, where ' #' starts a comment and ': ', a leading '&' or '!' mean something."""
    return [f"data.root={json.dumps(str(params.data.resolved_root().resolve()))}"]


def run_shard(params_path: Path, *, budget: Optional[float] = None, only: Optional[str] = None,
              out: Optional[Path] = None, work: Optional[Path] = None, overrides: Sequence[str] = (),
              progress: bool = True, report: bool = True) -> ShardResult:
    """One shard of the study in `params_path` (see the module docstring). budget: seconds (None: to the end)."""
    t0 = time.monotonic()
    deadline = None if budget is None else t0 + float(budget) - RESERVE_S
    params_path = Path(params_path).resolve()
    params = load_params(params_path, list(overrides))
    out = Path(out or params.report.dir).resolve()
    work = Path(work or work_dir(params_path)).resolve()
    work.mkdir(parents=True, exist_ok=True)
    pid = plan_hash(params)
    jobs = plan(params, only)
    dev = device_name()
    history = read_log(out)
    sets = [*overrides, *_absolute_data(params)]
    done, skipped, failed = [], {}, {}
    todo = [j for j in jobs if not is_done(j, out, pid)]
    print(f"shard: {params_path.name} (plan {pid}): {len(jobs) - len(todo)} of {len(jobs)} jobs committed under "
          f"{_rel(out)}; {len(todo)} to go; budget {'none' if budget is None else f'{budget:.0f} s'}; {dev}",
          flush=True)
    if todo and (read_json(work / PREPARED_MARK) if (work / PREPARED_MARK).exists() else {}).get("data") != \
            data_hash(params):
        todo.insert(0, Job("prepare"))
    for job in todo:
        if job.kind == "run" and job.run.scores == "main" and not is_done(Job("scores", job.seed), out, pid):
            skipped[job.key] = f"needs scores/s{job.seed}"
            continue
        if job.kind != "prepare" and "prepare" in failed:
            skipped[job.key] = "needs the prepared data"
            continue
        left = None if deadline is None else deadline - time.monotonic()
        est = estimate(job, history, dev, pid)
        if left is not None and (left <= 1 or (est is not None and est > left)):
            skipped[job.key] = f"needs ~{est:.0f} s, {max(left, 0):.0f} s left" if est else "no time left"
            continue
        status, secs = _run_child(params_path, job, out, work, sets, limit=left, progress=progress)
        row = {"job": job.key, "kind": list(_kind(job)), "size": _size(job), "status": status,
               "seconds": round(secs, 2), "device": dev, "plan": pid}
        append_log(out, row)
        history.append(row)
        if status == "ok":
            done.append(job.key)
        else:
            failed[job.key] = status
            if status == "timeout":
                break
    missing = sum(not is_done(j, out, pid) for j in jobs)
    secs = time.monotonic() - t0
    print(f"shard: {len(done)} jobs done in {secs:.0f} s, {len(failed)} failed, {len(skipped)} left for later; "
          f"{missing} of {len(jobs)} still missing", flush=True)
    for k, why in list(skipped.items())[:10]:
        print(f"  later: {k} ({why})", flush=True)
    for k, why in failed.items():
        print(f"  {why}: {k} (see {_rel(work / 'logs')})", flush=True)
    if report:
        report_shards(params, out, only=only)
    return ShardResult(done, skipped, failed, missing, secs)


def _rel(p: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def _run_child(params_path: Path, job: Job, out: Path, work: Path, sets: Sequence[str], *, limit: Optional[float],
               progress: bool) -> tuple[str, float]:
    """The job in its own process (and process group) in the work folder, killed at `limit` seconds."""
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "easycore.shards", job.key, "--params", str(params_path), "--out", str(out)]
    for s in sets:
        cmd += ["--set", s]
    if not progress:
        cmd.append("--quiet")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                                      os.environ.get("PYTHONPATH")]))}
    print(f"shard: {job.key}" + ("" if limit is None else f" (limit {limit:.0f} s)"), flush=True)
    t0 = time.monotonic()
    with open(logs / (job.key.replace("/", "__") + ".log"), "w") as f:
        p = subprocess.Popen(cmd, cwd=work, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = p.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            kill_group(p)
            return "timeout", time.monotonic() - t0
        except BaseException:
            kill_group(p)
            raise
    secs = time.monotonic() - t0
    return ("ok" if rc == 0 else f"failed (exit {rc})"), secs


def kill_group(p: subprocess.Popen, grace: float = KILL_GRACE_S) -> None:
    """SIGTERM the process group of `p` (started with start_new_session: the job and everything it started), SIGKILL
    after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(p.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            p.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


# ----------------------------------------------------------------------------- a job (in the work folder)
def run_job(params: Params, job: Job, out: Path, *, progress: bool = True) -> None:
    """One job, in the current (work) folder; its committed outputs go under `out`, each written atomically."""
    from . import pipeline

    out = Path(out)
    pid = plan_hash(params)
    if job.kind == "prepare":
        PREPARED_MARK.unlink(missing_ok=True)
        pipeline.prepare(params)
        write_json(PREPARED_MARK, {"data": data_hash(params)})
        return
    if job.kind == "scores":
        meta = pipeline.proxy(params, "main", seed=job.seed, progress=progress)
        picks = [(m, f) for m, f, s in runs.selections(params, "main") if s == job.seed]
        for m, f in picks:
            pipeline.select(params, m, f, "main", seed=job.seed)
            dst = selection_file(out, m, f, job.seed)
            with atomic_path(dst, suffix=".npy") as tmp:
                shutil.copyfile(runs.selection_dir("main", m, f, job.seed) / "indices.npy", tmp)
        write_json(scores_file(out, job.seed), {"plan": pid, "replicate": job.seed, "fingerprint": meta["fingerprint"],
                                                "model": meta["model"], "epochs": meta["epochs"], "seed": meta["seed"],
                                                "test_acc": meta["test_acc"],
                                                "selections": [f"{m}-{fraction_name(f)}" for m, f in picks]})
        return
    run = job.run
    if run.scores == "main":              # the replicate's committed selection, into the work folder
        dst = run.selection_dir() / "indices.npy"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(selection_file(out, run.method, run.fraction, run.seed), dst)
    pipeline.train_named(params, run, progress=progress)
    test = pipeline.load_test(params)
    pipeline.evaluate_named(params, run, progress=progress, test=test)
    aa = autoattack_run(params, run, test, progress=progress) if autoattack_wanted(params, run) else None
    write_run_file(params, run, out, test.y.cpu().numpy(), aa)


def autoattack_wanted(params: Params, run: runs.Run) -> bool:
    """AutoAttack for the primary cells' models (and the full-data reference) of eval.autoattack_modes, on the
    secondary replicates (train.survey_seeds): a check for gradient masking beside the evaluation's worst case."""
    pc = params.report.primary
    return (run.mode in params.eval.autoattack_modes and run.method in (pc.method, pc.comparator, runs.FULL)
            and run.seed in params.train.secondary_seeds())


def autoattack_run(params: Params, run: runs.Run, test, *, progress: bool = True) -> dict:
    """Standard AutoAttack at eval.eps on the first eval.autoattack_n evaluated images in class-interleaved order (the
    autoattack stage's subset rule), on those the evaluation left robust (`pipeline.autoattack_survivors`).
    {index, robust, robust_aa} (index: positions among the evaluated images)."""
    import torch

    from .evaluate import class_interleaved
    from .pipeline import autoattack_survivors

    index = class_interleaved(test.y.cpu().numpy(), params.eval.autoattack_n)
    at = torch.as_tensor(index).to(test.x.device)
    before, after = autoattack_survivors(params, run, index, test.x[at], test.y[at], test.fingerprint, test.device,
                                         progress=progress)
    print(f"autoattack: {run.key}: robust {before.float().mean():.3f} -> {after.float().mean():.3f} on {len(index)} "
          f"test images spread over the classes", flush=True)
    return {"index": index, "robust": before.numpy().astype(bool), "robust_aa": after.numpy().astype(bool)}


def write_run_file(params: Params, run: runs.Run, out: Path, labels: np.ndarray, aa: Optional[dict] = None) -> Path:
    """The run's committed record, in the outcomes format (`report.read_outcomes` reads it): its per-image outcomes
    (packed bits), AutoAttack's, the attacked images' `labels`; metrics, training history and the trained model's
    provenance (model, training set, pass counts: the evaluation's record of it) in the meta. No wall times
    (byte-identical when recomputed on one machine)."""
    from .report import OUTCOMES_FORMAT, check_outcomes
    from .store import load_arrays, save_arrays

    arrays, meta = load_arrays(run.eval_dir() / "outcomes.npz")
    outcomes = check_outcomes(run.eval_dir() / "outcomes.npz", arrays, meta.get("n"))
    packed = {f"{run.key}/{k}": np.packbits(np.asarray(v, dtype=bool)) for k, v in outcomes.items()}
    if aa is not None:
        packed[f"autoattack/{run.key}/robust"] = np.packbits(aa["robust"])
        packed[f"autoattack/{run.key}/robust_aa"] = np.packbits(aa["robust_aa"])
    packed["labels"] = np.asarray(labels, dtype=np.int64)
    n = len(next(iter(outcomes.values())))
    return save_arrays(run_file(out, run), packed, {
        "format": OUTCOMES_FORMAT, "n": n, "n_autoattack": 0 if aa is None else len(aa["index"]),
        "autoattack_index": None if aa is None else [int(i) for i in aa["index"]], "missing": [],
        "plan": plan_hash(params), "fingerprint": meta.get("fingerprint"), "run": run.key,
        "metrics": read_json(run.eval_dir() / "metrics.json"),
        "history": read_json(run.train_dir() / "history.json"),
        "train": meta.get("train") or {}})


# ----------------------------------------------------------------------------- reading what is committed
@dataclass
class Committed:
    results: list                        # report.RunResult for every run the plan declares (missing ones marked)
    autoattack: dict                     # run key -> {robust, robust_aa}
    labels: Optional[np.ndarray]
    meta: dict                           # run key -> the file's meta (metrics, history, train)
    other_plan: list                     # files of another plan (ignored)


def collect(params: Params, out: Path, only: Optional[str] = None) -> Committed:
    """Every committed run file of this plan under `out` (of the runs matching `only`), as the report's RunResults
    (a declared run without a file is 'missing (not yet run)'). Files must agree on the test set (fingerprint,
    labels): ArtifactError otherwise."""
    from .report import RunResult, read_labels, read_outcomes

    out = Path(out)
    pid = plan_hash(params)
    results, aa, metas, other = [], {}, {}, []
    labels, fp = None, None
    for run in runs.expected_runs(params):
        if only is not None and not fnmatch.fnmatchcase(run.key, only):
            continue
        path = run_file(out, run)
        if not path.exists():
            results.append(RunResult(run, "missing (not yet run)"))
            continue
        meta = _meta_of(path)
        if meta.get("plan") != pid:
            other.append(str(path))
            results.append(RunResult(run, f"missing (file of another plan {meta.get('plan')})"))
            continue
        got, got_aa = read_outcomes(path)
        y = read_labels(path)
        if fp is None:
            fp, labels = meta.get("fingerprint"), y
        elif meta.get("fingerprint") != fp or (y is not None and labels is not None and not np.array_equal(y, labels)):
            raise ArtifactError(f"{path} was evaluated on other test images ({meta.get('fingerprint')}) than the other "
                                f"committed runs ({fp}); remove it or the others")
        (res,) = got
        res.metrics = meta.get("metrics") or {}
        results.append(res)
        aa.update(got_aa)
        metas[run.key] = meta
    return Committed(results, aa, labels, metas, other)


def complete_replicates(params: Params, results) -> list[int]:
    """The longest prefix of train.seeds whose every primary run (primary method and comparator, every mode and
    coreset.fractions) is committed: the replicates an interim verdict may use."""
    pc = params.report.primary
    ok = {r.run for r in results if r.ok}
    out = []
    for s in params.train.seeds:
        need = [runs.Run("main", m, f, mode, s) for m in (pc.method, pc.comparator)
                for f in params.coreset.fractions for mode in params.train.modes]
        if not all(r in ok for r in need):
            break
        out.append(s)
    return out


def replicate_counts(params: Params, results) -> "pd.DataFrame":
    """Per cell (mode, method, fraction): replicates committed / planned, and which."""
    import pandas as pd

    cells: dict = {}
    for r in results:
        c = cells.setdefault((r.run.mode, r.run.method, r.run.fraction), {"planned": 0, "seeds": []})
        c["planned"] += 1
        if r.ok:
            c["seeds"].append(r.run.seed)
    return pd.DataFrame([{"mode": m, "method": meth, "fraction": f, "replicates": f"{len(c['seeds'])} of {c['planned']}",
                          "seeds": ", ".join(map(str, sorted(c["seeds"]))) or "-"}
                         for (m, meth, f), c in cells.items()])


# ----------------------------------------------------------------------------- anchors (published numbers)
ANCHORS = {
    # (mode, model): (what, clean %, robust %, minutes, source)
    ("fgsm_rs", "preact_resnet18"): ("FGSM-RS, PreAct ResNet-18, 15 epochs, cyclic lr 0.2, step 10/255", 86.06, 46.06,
                                     12.0, "Wong et al. 2020 (Fast is better than free), PGD-50-10"),
    ("pgd_at", "resnet18"): ("PGD-AT, ResNet-18, 100 epochs, one-cycle (FastAT benchmark, 3 seeds)", 85.35, 44.33,
                             None, "AutoAttack"),
    ("trades", "resnet18"): ("TRADES, ResNet-18, full data (ACS repository)", 85.41, 44.19, 344.0, "ACS repository"),
}


def anchor_table(params: Params, got: Committed, history: Sequence[dict]) -> "pd.DataFrame":
    """The full-data runs committed beside the published numbers for the same mode and model (clean / robust %,
    minutes), with AutoAttack where it ran, and the difference."""
    import pandas as pd

    rows = []
    secs = {h["job"]: h["seconds"] for h in history if h.get("status") == "ok"}
    dev = {h["job"]: h["device"] for h in history if h.get("status") == "ok"}
    for res in got.results:
        r = res.run
        if r.method != runs.FULL or not res.ok:
            continue
        meta = got.meta[r.key]
        model = (meta.get("train") or {}).get("model") or params.train.model
        what, a_clean, a_rob, a_min, src = ANCHORS.get((r.mode, model), (None,) * 5)
        m = res.metrics
        clean, rob = 100 * m["clean"]["accuracy"], 100 * m["robust"]["accuracy"]
        aa = got.autoattack.get(r.key)
        job = f"run/{r.key}"
        rows.append({"run": r.key, "model": model, "epochs": params.train.epochs, "test images": m["clean"]["n"],
                     "clean %": round(clean, 2), "robust % (worst case)": round(rob, 2),
                     "AutoAttack % (n)": f"{100 * aa['robust_aa'].mean():.2f} ({len(aa['robust_aa'])})" if aa else "-",
                     "minutes (train + eval)": round(secs[job] / 60, 1) if job in secs else None,
                     "device": dev.get(job, "-"), "published": what or "-",
                     "published clean / robust %": f"{a_clean} / {a_rob}" if what else "-",
                     "diff clean / robust (points)": f"{clean - a_clean:+.2f} / {rob - a_rob:+.2f}" if what else "-",
                     "published minutes": a_min if what else None})
    return pd.DataFrame(rows)


def curve_table(got: Committed) -> "pd.DataFrame":
    """The full-data runs' training histories side by side: epoch x (run: train acc / test acc, in %)."""
    import pandas as pd

    cols = {}
    for res in got.results:
        if res.run.method != runs.FULL or not res.ok:
            continue
        for h in got.meta[res.run.key].get("history") or []:
            row = cols.setdefault(h["epoch"], {"epoch": h["epoch"]})
            test = f"{100 * h['test_acc']:.1f}" if "test_acc" in h else "-"
            row[f"{res.run.name}: train / test %"] = f"{100 * h['train_acc']:.1f} / {test}"
    return pd.DataFrame([cols[k] for k in sorted(cols)])


# ----------------------------------------------------------------------------- the report
def scale_line(params: Params, history: Sequence[dict]) -> str:
    """The scale of the study (data, model, epochs, replicates, test images, eps, attacks) and where its committed
    jobs ran (devices and their total time, from the log)."""
    d, t, e = params.data, params.train, params.eval
    sub = "all" if d.n_per_class is None else f"{d.n_per_class}/class of"
    test = "all" if d.test_n_per_class is None else f"{d.test_n_per_class}/class of"
    secs: dict = {}
    for h in history:
        secs[h["device"]] = secs.get(h["device"], 0.0) + float(h["seconds"])
    where = "; ".join(f"{dev}: {s / 60:.1f} min" for dev, s in sorted(secs.items())) or "nothing run yet"
    return (f"*Scale: {d.dataset}, {sub} the training images, {e.n_test} test images ({test} the test set) attacked; "
            f"model {t.model}, {t.epochs} epochs (batch {t.batch_size}), modes {', '.join(t.modes)}; proxy "
            f"{params.proxy.model} {params.proxy.epochs} epochs; robust = per-image worst case over "
            f"{', '.join(e.attacks + e.strong)} at Linf {e.eps * 255:.0f}/255 (PGD-{e.pgd_steps}, {e.restarts} "
            f"restart{'s' if e.restarts > 1 else ''}); {len(t.seeds)} planned whole-pipeline replicates (secondary: "
            f"{len(t.secondary_seeds())}). Device time of the logged jobs (all tries, this plan): {where}.*")


def report_shards(params: Params, out: Path, *, only: Optional[str] = None) -> dict:
    """Recompute the study's report from whatever is committed under `out`: README.md (replicate counts, the
    verdict: interim on the complete replicates until all are in, the anchors), summary.json (the headline).
    Returns the summary."""
    import pandas as pd

    from . import report
    from .headline import headline

    out = Path(out)
    got = collect(params, out, only)
    history = [h for h in read_log(out) if h.get("plan") == plan_hash(params)]
    seeds = complete_replicates(params, got.results)
    planned = len(params.train.seeds)
    primary = any(r.run.scores == "main" for r in got.results)     # does the plan (or --only) hold the verdict's runs
    lines = [f"# {params.report.dir}: the study in shards", "",
             f"Recomputed from the run files committed under `{params.report.dir}/runs/` (plan {plan_hash(params)}"
             f"{f', runs {only}' if only else ''}): {sum(r.ok for r in got.results)} of {len(got.results)} planned "
             f"runs" + (f"; {len(seeds)} of {planned} planned replicates complete for the primary family." if primary
                        else "."), "", scale_line(params, history), ""]
    if got.other_plan:
        lines += [f"Ignored (another plan: the params changed since they ran): {len(got.other_plan)} files.", ""]
    counts = replicate_counts(params, got.results)
    lines += ["## Replicates per cell", "", counts.to_markdown(index=False), ""]
    summary: dict = {"runs_done": sum(r.ok for r in got.results), "runs_planned": len(got.results),
                     "replicates_complete": len(seeds), "replicates_planned": planned}
    if seeds and primary:
        t = params.train
        sub = dataclasses.replace(params, train=dataclasses.replace(
            t, seeds=seeds, survey_seeds=min(t.survey_seeds, len(seeds)) if t.survey_seeds else 0))
        keep = set(runs.expected_runs(sub))
        results = [r for r in got.results if r.run in keep]
        ver = report.verdict(results, sub, labels=got.labels)
        word = ("final (all planned replicates)" if len(seeds) == planned else
                f"INTERIM: {len(seeds)} of {planned} planned replicates; the pre-registered analysis is at {planned}")
        lines += [f"## Verdict ({word})", "",
                  "Primary family (Holm over it alone; the interval printed is the one that decided):", "",
                  report.verdict_markdown(ver, "primary").to_markdown(index=False), "",
                  "Secondary (unadjusted 95 % intervals):", "",
                  report.verdict_markdown(ver, "secondary").to_markdown(index=False), ""]
        ver.to_csv(out / "verdict.csv", index=False, float_format="%.6g")
        summary |= headline(ver, sub, n_test=len(got.labels) if got.labels is not None else None)
        summary["interim"] = len(seeds) < planned
    elif primary:
        lines += ["## Verdict", "", "No replicate is complete for the primary family yet: no verdict.", ""]
    if not summary["runs_done"]:
        lines += ["Nothing has been committed yet: no GPU figure of this study is measured.", ""]
    anchors = anchor_table(params, got, history)
    if len(anchors):
        lines += ["## Full-data runs beside published numbers", "", anchors.to_markdown(index=False), "",
                  "Their training curves (test accuracy every train.eval_every epochs, on the test subset):", "",
                  curve_table(got).to_markdown(index=False), ""]
    if got.autoattack:
        lines += ["## AutoAttack (standard, on the class-interleaved subset)", "",
                  report.autoattack_table(params, outcomes=got.autoattack).to_markdown(index=False), ""]
    (out / "README.md").parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "README.md", suffix=".md") as tmp:
        Path(tmp).write_text("\n".join(lines))
    write_json(out / "summary.json", summary)
    print(f"report: {summary['runs_done']} of {summary['runs_planned']} runs"
          + (f", {len(seeds)} of {planned} replicates complete" if primary else "")
          + f" -> {_rel(out / 'README.md')}, {_rel(out / 'summary.json')}", flush=True)
    return summary


# ----------------------------------------------------------------------------- a job's process
def _job_main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m easycore.shards", description="one job of a shard (run by "
                                 "`easycore shard`, in its work folder)")
    ap.add_argument("job")
    ap.add_argument("--params", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    params = load_params(a.params, a.overrides)
    run_job(params, Job.parse(a.job), Path(a.out), progress=not a.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(_job_main())
