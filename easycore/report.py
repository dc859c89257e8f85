"""The logic of the report notebooks, tested: read the evaluated runs a params file declares, build the coreset tables
(mean and 95 % CI per cell, bold only where the CI excludes the runner-up), the paired comparisons and the verdict,
the robustness curves, the top-level DVC metric, and save tables / figures atomically.

Every declared run appears in the tables: a run whose metrics are missing or unreadable is shown as `missing (<why>)`,
never dropped silently. Statistics come from `easycore.inference` (the replicate as the unit: paired differences over
crossed test images x replicates, t intervals; Holm over the pre-registered primary family) and, for a cell with one
replicate, `easycore.inference.cell_stat` (the interval over test images alone).
"""
from __future__ import annotations

import io
import json
import math
import os
import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from . import inference, runs
from .config import Params, fraction_name
from .store import ArtifactError, atomic_path, load_arrays, read_json, save_arrays

TABLES = Path("reports/tables")
FIGURES = Path("reports/figures")


# ----------------------------------------------------------------------------- all-or-nothing report outputs
# `easycore notebook` (notebook.run) sets STAGING_ENV to "<report.dir><os.pathsep><staging folder>" while the
# notebook executes: every writer below then writes what lies under report.dir into the staging folder instead (and
# returns the published path, so the notebook's own output is unchanged), and notebook.run publishes the staging
# folder when the notebook succeeded (`publish`). A failing or killed notebook leaves the published set untouched.
STAGING_ENV = "EASYCORE_REPORT_STAGING"


def staged(path: str | os.PathLike) -> Path:
    """Where a report output `path` is written: its place in the staging folder while a notebook runs under
    `easycore notebook` (paths under report.dir), else `path` itself."""
    spec = os.environ.get(STAGING_ENV)
    if not spec:
        return Path(path)
    root, _, staging = spec.partition(os.pathsep)
    rel = os.path.relpath(os.path.abspath(path), root)
    if rel == os.curdir or rel.split(os.sep)[0] == os.pardir:
        return Path(path)
    return Path(staging) / rel


def publish(staging: Path, root: Path) -> list[Path]:
    """Move a notebook's staged outputs into report.dir `root`: a file directly under the staging folder (summary.json,
    outcomes.npz) replaces its published copy (one rename); a folder one level down (figures/<name>, tables/<name>)
    replaces its published folder as a whole (two renames), so files an earlier configuration wrote there do not
    survive. Returns the published paths."""
    staging, root = Path(staging), Path(root)
    done = []
    for entry in sorted(staging.iterdir()):
        dest = root / entry.name
        if entry.is_file():
            os.replace(entry, dest)
            done.append(dest)
            continue
        dest.mkdir(parents=True, exist_ok=True)
        for sub in sorted(entry.iterdir()):
            target = dest / sub.name
            if sub.is_dir() and target.is_dir():
                old = staging / f".old-{entry.name}-{sub.name}"
                os.rename(target, old)
                os.rename(sub, target)
                shutil.rmtree(old)
            else:
                if target.is_dir():
                    shutil.rmtree(target)
                os.replace(sub, target)
            done.append(target)
    return done


def out_dirs(params: Params, name: str) -> tuple[Path, Path]:
    """(figures, tables) folders of notebook `name` under report.dir, created (a notebook with nothing to draw still
    has its declared output folders); under `easycore notebook` they are created in the staging folder."""
    root = Path(params.report.dir)
    dirs = root / "figures" / name, root / "tables" / name
    for d in dirs:
        staged(d).mkdir(parents=True, exist_ok=True)
    return dirs
BOLD = "**"
PAPER_CLAIM = {"standard": 7.0, "trades": 5.0}   # "up to +7 / +5 points" of adversarial accuracy (abstract)


# ----------------------------------------------------------------------------- reading runs
@dataclass
class RunResult:
    run: runs.Run
    status: str = "ok"                                  # "ok" or why it is missing
    metrics: dict = field(default_factory=dict)
    outcomes: dict = field(default_factory=dict)        # name -> bool [n_test]

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def check_outcomes(path, arrays: Mapping[str, np.ndarray], n: Optional[int] = None) -> dict[str, np.ndarray]:
    """Per-image outcomes as read from `path`, validated: every array 1-D bool (a float 0.3 is not "correct"), all
    of one length, equal to `n` (the file's meta) when given. ArtifactError (one line) otherwise."""
    lengths = set()
    for k, v in arrays.items():
        if v.dtype != np.bool_ or v.ndim != 1:
            raise ArtifactError(f"{path}: outcomes {k!r} must be a 1-D bool array per test image, got dtype "
                                f"{v.dtype} shape {v.shape}; re-run the stage that makes it")
        lengths.add(len(v))
    if len(lengths) > 1 or (n is not None and lengths and lengths != {int(n)}):
        raise ArtifactError(f"{path}: outcomes have lengths {sorted(lengths)} but the file says n = {n}; re-run "
                            f"the stage that makes it")
    clean = arrays.get("clean")
    for k, v in arrays.items():     # an attacked outcome is correct on the clean input AND under the attack
        if clean is not None and k != "clean" and bool((v & ~clean).any()):
            raise ArtifactError(f"{path}: outcomes {k!r} count {int((v & ~clean).sum())} images as correct that "
                                f"'clean' counts as wrong (an attacked outcome implies the clean one); the file is "
                                f"damaged; re-run the stage that makes it")
    return dict(arrays)


def load_run(run: runs.Run, root: Path = runs.ROOT, *, fingerprint: Optional[str] = None) -> RunResult:
    """metrics.json + outcomes.npz of one run; a missing or unreadable file, outcomes that are not bool of the
    file's length, or (with `fingerprint`) outcomes on another test set give status 'missing (...)'."""
    d = run.eval_dir(root)
    try:
        m = read_json(d / "metrics.json")
        arrays, meta = load_arrays(d / "outcomes.npz", fingerprint=fingerprint)
        arrays = check_outcomes(d / "outcomes.npz", arrays, meta.get("n"))
    except ArtifactError as e:
        why = "not evaluated" if not (d / "metrics.json").exists() else str(e).split(";")[0]
        return RunResult(run, f"missing ({why})")
    if not isinstance(m, dict) or not any(isinstance(v, dict) and "accuracy" in v for v in m.values()):
        return RunResult(run, f"missing (no accuracies in {d / 'metrics.json'})")
    return RunResult(run, "ok", m, arrays)


PREPARED_INFO = Path("data/prepared/info.json")


def load_results(params: Params, root: Path = runs.ROOT, *, fingerprint: Optional[str] = None,
                 info: Optional[Path] = PREPARED_INFO) -> list[RunResult]:
    """Every training run the pipeline declares for `params` (runs.expected_runs), loaded. Outcomes must come from
    one test set: `fingerprint`, else the prepared test set's (`info`, when it exists); a run evaluated on another
    is missing, never mixed into the paired statistics."""
    if fingerprint is None and info is not None and Path(info).exists():
        fingerprint = ((read_json(info) or {}).get("test") or {}).get("fingerprint")
    return [load_run(r, root, fingerprint=fingerprint) for r in runs.expected_runs(params)]


OUTCOMES_FORMAT = "easycore-outcomes-1"


def export_outcomes(results: Sequence[RunResult], path: str | os.PathLike,
                    autoattack_root: Optional[Path] = runs.ROOT / "autoattack", *, labels=None, **meta) -> Path:
    """Every evaluated run's per-image outcomes as one small .npz (numbers and booleans only, byte-stable), so the
    verdict and every accuracy / CI can be recomputed without retraining (`read_outcomes`). Member
    '<scores>/<run name>/<outcome key>' holds np.packbits of the bool vector over the attacked test images (the
    same images, in the same order, for every run: the prepared test set's positions
    `evaluate.test_positions(labels, eval.n_test)`, 0..n-1 when n_test covers the set); 'autoattack/<run key>/<robust|robust_aa>' the AutoAttack
    stage's, over the images at positions meta['autoattack_index'] of those; 'labels' (int64) the attacked images'
    classes, when given (`read_labels`). `meta` (e.g. the scale) is stored beside."""
    arrays, n, n_run = {}, set(), {}
    for r in results:
        if r.ok and len({len(v) for v in r.outcomes.values()}) > 1:
            raise ValueError(f"export_outcomes: {r.run.key}'s outcomes have different numbers of images "
                             f"({sorted({len(v) for v in r.outcomes.values()})})")
        for k, v in (r.outcomes.items() if r.ok else ()):
            arrays[f"{r.run.key}/{k}"] = np.packbits(np.asarray(v, dtype=bool))
            n.add(len(v))
            n_run[r.run.key] = len(v)
    aa_n = set()
    aa = autoattack_outcomes(autoattack_root) if autoattack_root else {}
    for key in sorted(aa):
        for k in ("robust", "robust_aa"):
            arrays[f"autoattack/{key}/{k}"] = np.packbits(np.asarray(aa[key][k], dtype=bool))
            aa_n.add(len(aa[key][k]))
    if len(aa_n) > 1:
        raise ValueError(f"export_outcomes: AutoAttack attacked different numbers of images ({sorted(aa_n)})")
    if labels is not None and n and len(labels) != max(n):
        raise ValueError(f"export_outcomes: {len(labels)} labels for evaluations of up to {max(n)} images")
    if labels is not None:
        arrays["labels"] = np.asarray(labels, dtype=np.int64)
    missing = [f"{r.run.key}: {r.status}" for r in results if not r.ok]
    aa_index = read_json(Path(autoattack_root) / "summary.json").get("index") if aa else None
    # n: the largest evaluation (the labels' length); n_runs: the runs evaluated on fewer (a prefix of the same
    # class-interleaved order, report.subset_of), absent when every run took n
    big = max(n, default=0)
    fewer = {k: v for k, v in sorted(n_run.items()) if v != big}
    save_arrays(staged(path), arrays, {"format": OUTCOMES_FORMAT, "n": big, **({"n_runs": fewer} if fewer else {}),
                                      "n_autoattack": next(iter(aa_n), 0), "autoattack_index": aa_index,
                                      "missing": missing, **meta})
    return Path(path)


def read_outcomes(path: str | os.PathLike, params: Optional[Params] = None) -> tuple[list[RunResult], dict]:
    """Read an `export_outcomes` file: (RunResults with their outcomes, ready for `verdict` / `curves` /
    `summary`; the AutoAttack outcomes {run key: {robust, robust_aa}}). With `params`, every run it declares that
    the file lacks is returned as missing. Numbers and booleans only: never unpickles."""
    arrays, meta = load_arrays(path)
    if meta.get("format") != OUTCOMES_FORMAT:
        raise ArtifactError(f"{path} is not an easycore outcomes file (format {meta.get('format')!r})")
    per_run: dict = {}
    aa: dict = {}
    for member, bits in arrays.items():
        if member == "labels":
            continue
        key, _, name = member.rpartition("/")
        n_key = "n_autoattack" if key.startswith("autoattack/") else "n"
        n_val = (meta.get("n_runs") or {}).get(key, meta.get(n_key)) if n_key == "n" else meta.get(n_key)
        unpacked = _unpack(path, member, bits, n_val, n_key)
        if key.startswith("autoattack/"):
            aa.setdefault(key[len("autoattack/"):], {})[name] = unpacked
        else:
            per_run.setdefault(key, {})[name] = unpacked
    results = [RunResult(runs.parse(k), "ok", {}, check_outcomes(path, v)) for k, v in per_run.items()]
    if params is not None:
        have = {r.run for r in results}
        results += [RunResult(r, "missing (not in the outcomes file)") for r in runs.expected_runs(params)
                    if r not in have]
    return results, aa


def read_labels(path: str | os.PathLike) -> Optional[np.ndarray]:
    """The attacked test images' classes stored by `export_outcomes` (None in a file written without them)."""
    arrays, meta = load_arrays(path)
    if meta.get("format") != OUTCOMES_FORMAT:
        raise ArtifactError(f"{path} is not an easycore outcomes file (format {meta.get('format')!r})")
    y = arrays.get("labels")
    if y is not None and (y.ndim != 1 or len(y) != meta.get("n")):
        raise ArtifactError(f"{path}: labels of shape {y.shape} for n = {meta.get('n')} images; the file is damaged")
    return None if y is None else y.astype(np.int64)


def outcomes_data(path: str | os.PathLike) -> dict:
    """The description of the prepared data (data/prepared/info.json: dataset, classes, sizes, fingerprints) that an
    `export_outcomes` file carries in its meta ('data'), so that a fresh clone renders the coresets report from the
    file alone (`easycore reports`)."""
    _, meta = load_arrays(path)
    if meta.get("format") != OUTCOMES_FORMAT:
        raise ArtifactError(f"{path} is not an easycore outcomes file (format {meta.get('format')!r})")
    if not isinstance(meta.get("data"), dict):
        raise ArtifactError(f"{path} does not describe its data (written before the outcomes files did): "
                            "`dvc pull data/prepared/info.json`, or re-render it from runs/")
    return meta["data"]


def _unpack(path, member: str, bits: np.ndarray, n, n_key: str) -> np.ndarray:
    """np.unpackbits(bits, count=n), checked: uint8 bytes, exactly ceil(n / 8) of them, zero padding bits. A wrong
    `n` in the meta would otherwise zero-pad or truncate every run silently."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ArtifactError(f"{path}: meta {n_key} = {n!r} is not a count of test images")
    if bits.dtype != np.uint8 or bits.ndim != 1 or len(bits) != (n + 7) // 8:
        raise ArtifactError(f"{path}: member {member!r} holds {bits.size} bytes of dtype {bits.dtype}, not the "
                            f"{(n + 7) // 8} packed bytes of {n_key} = {n} outcomes; the file is damaged")
    out = np.unpackbits(bits)
    if out[n:].any():
        raise ArtifactError(f"{path}: member {member!r} has outcomes beyond {n_key} = {n}; the file is damaged")
    return out[:n].astype(bool)


TIMINGS = Path("runs/timings")


def runs_frame(results: Sequence[RunResult], timings: Optional[Path] = None) -> pd.DataFrame:
    """One row per declared run: identity, status, n_test, every accuracy in its metrics and sample-forward/backward
    passes (from the run's model metadata via the metrics' meta); with `timings` (runs/timings) also the train
    minutes, which are wall-clock values: for `timing_table`, never for a report output (it would change on every
    re-run)."""
    rows = []
    for r in results:
        row = {"scores": r.run.scores, "method": r.run.method, "fraction": r.run.fraction, "mode": r.run.mode,
               "seed": r.run.seed, "status": r.status}
        for k, v in r.metrics.items():
            if isinstance(v, dict) and "accuracy" in v:
                row[k] = v["accuracy"]
                row["n_test"] = max(row.get("n_test", 0), v.get("n", 0))
        counts = (r.metrics.get("meta", {}).get("train") or {}).get("counts") or {}
        row.update({f"passes_{k}": v for k, v in counts.items() if k in ("forward", "backward")})
        row["examples"] = counts.get("examples")
        if timings:
            row["train_minutes"] = _minutes(timings, "train", r.run)
        rows.append(row)
    return pd.DataFrame(rows)


def timing_table(results: Sequence[RunResult], timings: Path = TIMINGS) -> pd.DataFrame:
    """Mean train minutes per run by (mode, method) from runs/timings (a log beside the runs, not a DVC output);
    the coresets notebook writes it to runs/timings/report/, outside the report (its outputs hold no wall time)."""
    df = runs_frame(results, timings)
    if df.empty:
        return df
    out = df.groupby(["mode", "method"])["train_minutes"].agg(["mean", "count"]).round(3)
    return out.rename(columns={"mean": "train min/run", "count": "runs"})


def _minutes(timings: Path, stage: str, run: runs.Run) -> Optional[float]:
    p = Path(timings) / stage / run.scores / f"{run.name}.json"
    try:
        return round(json.loads(p.read_text())["seconds"] / 60, 3)
    except (OSError, ValueError, KeyError):
        return None


def outcome_matrix(results: Sequence[RunResult], *, scores: str, method: str, fraction: float, mode: str,
                   key: str) -> Optional[np.ndarray]:
    """bool [S, n]: the per-image outcomes `key` of every seed of one cell (seeds ascending, `seed_rows` stacked), or
    None when any declared seed of the cell is missing or lacks the key."""
    rows = seed_rows(results, scores=scores, method=method, fraction=fraction, mode=mode, key=key)
    return None if rows is None else np.stack(list(rows.values()))


def _cell_status(results, scores, method, fraction, mode) -> str:
    bad = [r for r in results if (r.run.scores, r.run.method, r.run.fraction, r.run.mode)
           == (scores, method, fraction, mode) and not r.ok]
    return bad[0].status if bad else "missing (no such run declared)"


# ----------------------------------------------------------------------------- cells of a mode's table
def cells(params: Params, mode: str) -> list[tuple[str, str, float]]:
    """(scores, method, fraction) of every coreset cell of a mode's table: static methods (main proxy; the survey
    methods at their fractions), adaptive methods (in their modes), then the full-data reference (fraction 1.0)."""
    c = params.coreset
    out = [("main", m, f) for m in c.methods for f in c.fractions]
    if mode in c.survey_modes:
        out += [("main", m, f) for m in c.survey_methods for f in c.survey_fractions]
    if mode in c.adaptive_modes:
        out += [(runs.NONE, m, f) for m in c.adaptive for f in c.fractions
                if c.adaptive_fractions is None or f in c.adaptive_fractions]
    return out + [(runs.NONE, runs.FULL, 1.0)]


def fractions(params: Params) -> list[float]:
    """Every coreset fraction of the tables (the main ones, then survey-only ones)."""
    return list(dict.fromkeys(list(params.coreset.fractions) + list(params.coreset.survey_fractions)))


def cell_frame(results: Sequence[RunResult], params: Params, mode: str, keys: Sequence[str], *,
               n_boot: int = 4000) -> pd.DataFrame:
    """Long numeric frame: one row per (method, fraction, key): mean, lo, hi (95 % CI, bootstrap over test images
    and seeds), std over seeds, n_seeds, n_test, status."""
    rows = []
    for scores, method, f in cells(params, mode):
        for key in keys:
            m = outcome_matrix(results, scores=scores, method=method, fraction=f, mode=mode, key=key)
            row = {"method": method, "fraction": f, "key": key}
            if m is None:
                rows.append(row | {"status": _cell_status(results, scores, method, f, mode)})
                continue
            s = accuracy_stat(m, n_boot=n_boot)
            rows.append(row | {"mean": s.mean, "lo": s.lo, "hi": s.hi, "std_seeds": s.std_seeds,
                               "n_seeds": s.n_seeds, "n_test": s.n_test, "status": "ok"})
    return pd.DataFrame(rows)


def accuracy_stat(m: np.ndarray, *, n_boot: int = 4000) -> "inference.CellStat":
    """Mean accuracy of a [K, n] outcome matrix with its 95 % interval: the replicate as the unit (crossed images x
    replicates, inference.crossed; clipped to [0, 1]) when K >= 2; with one replicate the interval over test images alone
    (inference.cell_stat), conditional on that one run."""
    from . import inference

    if m.shape[0] < 2:
        return inference.cell_stat(m, n_boot=n_boot)
    d = inference.crossed(m.astype(np.float64))
    return inference.CellStat(mean=d.diff, lo=max(0.0, d.lo), hi=min(1.0, d.hi), std_seeds=float(m.mean(1).std()),
                          n_seeds=m.shape[0], n_test=m.shape[1])


def best_marks(outs: Mapping[str, Mapping[int, np.ndarray]], *, level: float = 0.95, labels=None) -> list[str]:
    """The method with the highest accuracy, when its paired interval against the runner-up (on the replicates both
    hold, inference.paired) excludes 0; [] otherwise or with fewer than 2 common replicates."""
    from . import inference

    if len(outs) < 2:
        return []
    acc = {m: float(np.mean([v.mean() for v in r.values()])) for m, r in outs.items()}
    first, second = sorted(acc, key=acc.get, reverse=True)[:2]
    seeds, a, b = paired_rows(outs[first], outs[second], labels)
    if len(seeds) < 2:
        return []
    return [first] if inference.paired(a, b, level=level).lo > 0 else []


def _fmt(row) -> str:
    if row.get("status") != "ok":
        return str(row.get("status"))
    return f"{100 * row['mean']:.1f} [{100 * row['lo']:.1f}, {100 * row['hi']:.1f}]"


def accuracy_table(results: Sequence[RunResult], params: Params, mode: str, keys: Sequence[str], *,
                   n_boot: int = 4000, frame: Optional[pd.DataFrame] = None, labels=None) -> pd.DataFrame:
    """The paper's table for one mode, for reading: rows = methods (full data last), columns '<key> @ f=<f>',
    cells 'mean [95 % CI]' in %. In each column the best coreset method is bold only when its paired CI against
    the runner-up excludes 0 (`best_marks`); missing runs say why. No wall times (see `timing_table`); the
    training cost per fraction as sample passes relative to full-data training (easycore/cost.py)."""
    frame = cell_frame(results, params, mode, keys, n_boot=n_boot) if frame is None else frame
    table: dict[str, dict[str, str]] = {}
    for (method, f, key), row in frame.set_index(["method", "fraction", "key"]).iterrows():
        label = "full data (reference)" if method == runs.FULL else method
        col = f"{key} @ f={fraction_name(f)}" if method != runs.FULL else None
        cell = _fmt(row.to_dict())
        if col is None:
            for ff in fractions(params):
                table.setdefault(label, {})[f"{key} @ f={fraction_name(ff)}"] = cell
        else:
            table.setdefault(label, {})[col] = cell
    for f in fractions(params):
        for key in keys:
            outs = {}
            for scores, method, ff in cells(params, mode):
                if ff == f and method != runs.FULL:
                    m = seed_rows(results, scores=scores, method=method, fraction=f, mode=mode, key=key)
                    if m is not None:
                        outs[method] = m
            for method in best_marks(outs, labels=labels) if len(outs) > 1 else ():
                col = f"{key} @ f={fraction_name(f)}"
                table[method][col] = f"{BOLD}{table[method][col]}{BOLD}"
    cols = [f"{key} @ f={fraction_name(f)}" for f in fractions(params) for key in keys]
    out = pd.DataFrame.from_dict(table, orient="index").reindex(columns=cols).fillna("not run")
    from .cost import cost_columns  # training cost as sample passes relative to full-data training (not wall time)

    out = cost_columns(out, runs_frame(results, timings=None), mode, fractions(params))
    out.index.name = "method"
    return out


# ----------------------------------------------------------------------------- paired comparisons and the verdict
# Inference with the replicate as the unit (easycore/inference.py): rows of two methods are paired by replicate
# (the seeds both hold: a secondary group runs the first train.survey_seeds replicates) and by test image.
def seed_rows(results: Sequence[RunResult], *, scores: str, method: str, fraction: float, mode: str,
              key: str) -> Optional[dict[int, np.ndarray]]:
    """{seed: bool [n]} of one cell's outcomes `key`, or None when any declared replicate is missing or lacks it."""
    cell = [r for r in results if (r.run.scores, r.run.method, r.run.fraction, r.run.mode)
            == (scores, method, fraction, mode)]
    if not cell or any(not r.ok or key not in r.outcomes for r in cell):
        return None
    return {r.run.seed: r.outcomes[key] for r in sorted(cell, key=lambda r: r.run.seed)}


def subset_of(labels, n_from: int, n_to: int) -> np.ndarray:
    """Positions, among the n_from images an evaluation of n_from took, of the n_to < n_from images an evaluation of
    n_to took: both are prefixes of the one class-interleaved order (`evaluate.test_positions`), so the smaller set
    is inside the larger. `labels`: the classes of the largest evaluated set (the whole test set when an evaluation
    took all of it), as `read_labels` / `attacked_labels` give them."""
    from .evaluate import test_positions

    labels = np.asarray(labels)
    if n_from > len(labels):
        raise ValueError(f"labels of {len(labels)} images cannot place an evaluation of {n_from}")
    lab = labels if n_from == len(labels) else labels[test_positions(labels, n_from)]
    return test_positions(lab, n_to)


def labels_of(labels, n: int) -> Optional[np.ndarray]:
    """The classes of the n images an evaluation of n took (`labels`: those of the largest evaluated set)."""
    if labels is None:
        return None
    labels = np.asarray(labels)
    return labels if n == len(labels) else labels[subset_of(labels, len(labels), n)]


def paired_rows(a: Mapping[int, np.ndarray], b: Mapping[int, np.ndarray], labels=None
                ) -> tuple[list[int], np.ndarray, np.ndarray]:
    """(common seeds, a [K, n], b [K, n]) on the replicates both cells hold and the test images both were attacked
    on: where one cell was evaluated on more images (eval.primary_n_test), its outcomes are restricted to the other's
    (`subset_of`, which needs `labels`)."""
    common = sorted(set(a) & set(b))
    if not common:
        return [], np.zeros((0, 0), bool), np.zeros((0, 0), bool)
    ma, mb = np.stack([a[s] for s in common]), np.stack([b[s] for s in common])
    if ma.shape[1] != mb.shape[1]:
        if labels is None:
            raise ValueError(f"cells attacked on {ma.shape[1]} and {mb.shape[1]} test images: pass the labels to "
                             f"pair them on the images both were attacked on")
        n = min(ma.shape[1], mb.shape[1])
        ma = ma[:, subset_of(labels, ma.shape[1], n)] if ma.shape[1] > n else ma
        mb = mb[:, subset_of(labels, mb.shape[1], n)] if mb.shape[1] > n else mb
    return common, ma, mb


def _scores_of(params: Params, mode: str, method: str, fraction: float) -> Optional[str]:
    for s, m, f in cells(params, mode):
        if m == method and f == fraction:
            return s
    return None


def _cell(results, params, mode, method, fraction, key):
    s = _scores_of(params, mode, method, fraction)
    return None if s is None else seed_rows(results, scores=s, method=method, fraction=fraction, mode=mode, key=key)


def _full_pct(results, mode, key) -> float:
    m = outcome_matrix(results, scores=runs.NONE, method=runs.FULL, fraction=1.0, mode=mode, key=key)
    return 100 * float(m.mean()) if m is not None else math.nan


def _full_missing(results, params: Params, mode: str) -> list[int]:
    """The declared full-data replicates of `mode` that are not evaluated (the eps rule needs every one)."""
    have = {r.run.seed for r in results if r.ok and (r.run.method, r.run.mode) == (runs.FULL, mode)}
    return [s for s in params.train.full_data_seeds() if s not in have]


def primary_eps(results: Sequence[RunResult], params: Params, mode: str) -> tuple[float, str]:
    """The primary family's eps for `mode` and the rule that chose it (report.primary): a number from the params;
    else eval.mode_eps[mode] (the mode's headline eps, fixed before the run); else the largest eps > 0 of
    eval.eps_grid where the full-data model keeps >= min_full_robust robust accuracy (mean over its replicates), the
    smallest eps > 0 when none does. The rule refuses rather than moves: with a declared full-data replicate
    missing it gives (nan, "missing runs (full data, replicate k)"), and the cells say so."""
    from .evaluate import eps_name

    pc = params.report.primary
    if pc.eps is not None:
        return float(pc.eps), "fixed in params"
    if mode in params.eval.mode_eps:
        return float(params.eval.mode_eps[mode]), "fixed in params (eval.mode_eps)"
    miss = _full_missing(results, params, mode)
    if miss:
        return math.nan, f"missing runs (full data, replicate {', '.join(map(str, miss))})"
    grid = sorted(e for e in set(params.eval.eps_grid) | {params.eval.eps} if e > 0)
    acc = {e: _full_pct(results, mode, eps_name(e)) for e in grid}
    ok = [e for e in grid if acc[e] >= 100 * pc.min_full_robust]
    if ok:
        return ok[-1], f"largest eps with full data >= {100 * pc.min_full_robust:g}% robust ({acc[ok[-1]]:.1f}%)"
    return grid[0], f"smallest eps (full data < {100 * pc.min_full_robust:g}% robust everywhere)"


def chance_pct(labels) -> float:
    """A constant classifier's accuracy on the attacked images (the most frequent class's share), in %."""
    labels = np.asarray(labels)
    return 100 * float(np.bincount(labels).max() / len(labels)) if len(labels) else math.nan


def _pair(results, params, mode, fraction, key, a, b, labels):
    """(seeds, a [K, n], b [K, n], labels of the n images) of two cells on their common replicates and images, or a
    'missing runs (...)' string."""
    ra, rb = _cell(results, params, mode, a, fraction, key), _cell(results, params, mode, b, fraction, key)
    if ra is None or rb is None:
        return "missing runs (" + ", ".join(m for m, r in ((a, ra), (b, rb)) if r is None) + ")"
    seeds, ma, mb = paired_rows(ra, rb, labels)
    if not seeds:
        return "missing runs (no common replicate)"
    return seeds, ma, mb, labels_of(labels, ma.shape[1])


def compare_cells(results, params, mode: str, fraction: float, key: str, a: str, b: str, labels, *,
                  level: float) -> dict:
    """`a` - `b` in (mode, fraction) on outcome `key`: the paired difference with the replicate as the unit, in
    points, on both targets (inference.paired: new images and replicates; these images), accuracies, clean
    accuracies, validity. Not decided here."""
    from . import inference

    row = {"mode": mode, "fraction": fraction, "method": a, "comparator": b}
    got = _pair(results, params, mode, fraction, key, a, b, labels)
    if isinstance(got, str):
        return row | {"status": got}
    seeds, ma, mb, lab = got
    d = inference.paired(ma, mb, level=level)
    fx = inference.paired(ma, mb, level=level, target="fixed")
    clean = _pair(results, params, mode, fraction, "clean", a, b, labels)
    ca, cb = (clean[1], clean[2]) if not isinstance(clean, str) else (None, None)
    row |= {"status": "ok", "k": d.k, "n": d.n, "method_pct": 100 * float(ma.mean()),
            "comparator_pct": 100 * float(mb.mean()),
            "method_clean_pct": 100 * float(ca.mean()) if ca is not None else math.nan,
            "comparator_clean_pct": 100 * float(cb.mean()) if cb is not None else math.nan,
            "diff": 100 * d.diff, "se": 100 * d.se, "df": d.df, "p": d.p, "sd_rep": 100 * d.sd_rep,
            "p_fixed": fx.p, "_diff": d, "_fixed": fx}
    return _with_context(row, results, mode, key, lab)


def _with_context(row: dict, results, mode: str, key: str, labels) -> dict:
    """A compared pair's row with the full-data reference (robust at `key`, clean), the constant classifier's
    accuracy on the attacked images and whether the pair is informative (both models above it)."""
    row |= {"full_pct": _full_pct(results, mode, key), "full_clean_pct": _full_pct(results, mode, "clean"),
            "chance_pct": chance_pct(labels) if labels is not None else math.nan}
    row["informative"] = bool(labels is None or min(row["method_pct"], row["comparator_pct"]) > row["chance_pct"])
    return row


def _label(m: str) -> str:
    return "EasyCore" if m == "easycore" else m


INDICATIVE_K = 5   # rows with fewer replicates say "indicative" beside their word; no claim rests on one


def _word(row, lo, hi) -> str:
    if row.get("status") != "ok":
        return row.get("status", "missing runs")
    if row["k"] < 2:
        return f"not replicated (K={row['k']})"
    if not row["informative"]:
        return "uninformative (a model at or below a constant classifier)"
    word = ("no detectable difference" if not (lo > 0 or hi < 0) else
            f"{_label(row['method'])} {'better' if lo > 0 else 'worse'}")
    return word + (f" (K = {int(row['k'])}: indicative)" if row["k"] < INDICATIVE_K else "")


def verdict(results: Sequence[RunResult], params: Params, *, labels=None) -> pd.DataFrame:
    """The verdict, one row per comparison (points; numbers and names only; `verdict_markdown` for reading):

    primary    report.primary.method - comparator for every (mode, fraction of report.primary.fractions) at the
               mode's primary eps (`primary_eps`). Holm over this family alone. The crossed interval (target: new
               test images and new replicates) decides: it is at the level of the Holm step that decided the cell
               (1 - alpha / (m - r + 1) for the r-th smallest p; 1 - alpha / m where Holm stopped before it), so it
               excludes 0 exactly when the verdict is a difference (a Holm-step interval, not a simultaneous one).
               Beside it, at the same level, the fixed-test-set interval (target: these test images, new
               replicates: the t over the K per-replicate differences). MDE at `power` for the family's Bonferroni
               alpha / m.
    secondary  (unadjusted 95 % intervals, labelled so): the pair at the other fractions and at every other eps; the
               class-balanced pair (easycore_balanced - random_balanced) where surveyed; EasyCore against the best
               other method (Hsu's comparison with the best: Bonferroni-simultaneous over the m other methods, m
               printed, on their common replicates).

    A cell whose models are at or below a constant classifier on the attacked images (`labels`: the classes of the
    largest evaluated set) is "uninformative"; one with a single replicate is "not replicated"; fewer than
    INDICATIVE_K replicates say "indicative" beside the word; a missing replicate of either method, or of the
    full-data model whose rule picks the eps, leaves the cell undecided ("missing runs (...)")."""
    from . import inference
    from .evaluate import eps_name

    pc = params.report.primary
    alpha = 1 - pc.level
    prim_f = params.primary_fractions()
    rows = []
    for mode in params.train.modes:
        eps0, rule = primary_eps(results, params, mode)
        if math.isnan(eps0):           # the rule refuses: every primary cell of the mode says which run is missing
            for f in prim_f:
                rows.append({"eps_255": math.nan, "family": "primary", "comparison": f"{pc.method} - {pc.comparator}",
                             "eps_rule": rule, "mode": mode, "fraction": f, "method": pc.method,
                             "comparator": pc.comparator, "status": rule})
            continue
        # the eps this mode's models were attacked at: the grid and the mode's headline eps
        mode_grid = sorted(e for e in set(params.eval.eps_grid) | {params.eval.for_mode(mode).eps} if e > 0)
        for f in fractions(params):
            for eps in mode_grid:
                key = eps_name(eps)
                base = {"eps_255": round(eps * 255, 3)}
                if f in params.coreset.fractions:
                    fam = "primary" if eps == eps0 and f in prim_f else "secondary"
                    rows.append(base | {"family": fam, "comparison": f"{pc.method} - {pc.comparator}",
                                        "eps_rule": rule if eps == eps0 else ""}
                                | compare_cells(results, params, mode, f, key, pc.method, pc.comparator, labels,
                                                level=pc.level))
                if eps != eps0:
                    continue
                have = {m for s, m, ff in cells(params, mode) if ff == f}
                if {"easycore_balanced", "random_balanced"} <= have:
                    rows.append(base | {"family": "secondary", "comparison": "easycore_balanced - random_balanced",
                                        "eps_rule": ""}
                                | compare_cells(results, params, mode, f, key, "easycore_balanced", "random_balanced",
                                                labels, level=pc.level))
                others = sorted(m for m in have if m not in (pc.method, runs.FULL))
                if pc.method in have and len(others) > 1:
                    rows.append(base | {"family": "secondary", "comparison": f"{pc.method} - best other (Hsu)",
                                        "eps_rule": ""} | _vs_best(results, params, mode, f, key, pc.method, others,
                                                                   labels, pc.level))
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    # the primary family: Holm; each cell's interval at its Holm step's level
    prim = df.index[df.family == "primary"]
    m = len(prim)
    for c in ("p_holm", "lo", "hi", "mde", "fixed_lo", "fixed_hi"):
        df[c] = math.nan
    df["ci_level"] = pc.level
    df["ci_kind"] = ""
    df["verdict"] = ""
    decidable = [i for i in prim if df.at[i, "status"] == "ok" and df.at[i, "k"] >= 2]
    p_eff = [df.at[i, "p"] if df.at[i, "informative"] else 1.0 for i in decidable]   # never decided: last in Holm
    adj = inference.holm(p_eff) if decidable else []
    order = sorted(range(len(decidable)), key=lambda j: (p_eff[j], j))
    stopped = False
    for rank, j in enumerate(order):
        i = decidable[j]
        step_alpha = alpha / (m - rank)
        step = f"Holm step {rank + 1} of {m}"
        if stopped or p_eff[j] > step_alpha:
            stopped = True
            step_alpha, step = alpha / m, f"Holm: alpha / {m} (not rejected)"
        d = df.at[i, "_diff"].at(1 - step_alpha)
        fx = df.at[i, "_fixed"].at(1 - step_alpha)
        df.loc[i, ["lo", "hi", "ci_level", "p_holm", "fixed_lo", "fixed_hi"]] = [
            100 * d.lo, 100 * d.hi, 1 - step_alpha, adj[j], 100 * fx.lo, 100 * fx.hi]
        df.at[i, "ci_kind"] = step
        df.at[i, "mde"] = 100 * inference.mde(d, alpha=alpha / m, power=pc.power)
    for i in df.index:
        r = df.loc[i]
        if r["family"] == "secondary" and r.get("status") == "ok" and isinstance(r.get("_diff"), inference.Diff):
            df.loc[i, ["lo", "hi", "fixed_lo", "fixed_hi"]] = [100 * r["_diff"].lo, 100 * r["_diff"].hi,
                                                               100 * r["_fixed"].lo, 100 * r["_fixed"].hi]
            df.at[i, "ci_kind"] = "unadjusted"
        vb = r.get("_best")
        if isinstance(vb, inference.VsBest):     # Hsu's simultaneous interval against the best other method
            df.loc[i, ["lo", "hi", "ci_level"]] = [100 * vb.lo, 100 * vb.hi, vb.level]
            df.at[i, "ci_kind"] = f"simultaneous over m = {vb.m} (Bonferroni, Hsu)"
        r = df.loc[i]
        # primary: the step interval excludes 0 exactly when Holm rejects (same t, df), so the word it gives is Holm's
        word = _word(r, r.get("lo", math.nan), r.get("hi", math.nan))
        if isinstance(vb, inference.VsBest):
            word = word.replace("better", "better than every other").replace("worse", "worse than the best other")
        df.at[i, "verdict"] = word
    df["paper_claim_points"] = df["mode"].map(PAPER_CLAIM)
    cols = ["family", "mode", "fraction", "eps_255", "comparison", "method", "comparator", "k", "n", "method_pct",
            "comparator_pct", "diff", "lo", "hi", "ci_level", "ci_kind", "p", "p_holm", "fixed_lo", "fixed_hi",
            "p_fixed", "mde", "sd_rep", "df", "verdict", "method_clean_pct", "comparator_clean_pct", "full_pct",
            "full_clean_pct", "chance_pct", "informative", "eps_rule", "status", "paper_claim_points"]
    df = df.drop(columns=[c for c in ("_diff", "_fixed", "_best", "se") if c in df])
    return df[[c for c in cols if c in df]].reset_index(drop=True)


def _vs_best(results, params, mode, f, key, method, others, labels, level) -> dict:
    """Hsu's comparison with the best: `method` - max_j mu_j from Bonferroni-simultaneous intervals of
    `method` - j on the replicates (and test images) each pair shares."""
    from . import inference

    ra = _cell(results, params, mode, method, f, key)
    row = {"mode": mode, "fraction": f, "method": method}
    rb = {j: _cell(results, params, mode, j, f, key) for j in others}
    miss = [j for j, r in rb.items() if r is None] + ([method] if ra is None else [])
    if miss:
        return row | {"comparator": "best other", "status": "missing runs (" + ", ".join(miss) + ")"}
    diffs, acc = {}, {}
    for j, r in rb.items():
        seeds, ma, mb = paired_rows(ra, r, labels)
        diffs[j] = inference.paired(ma, mb, level=level)
        acc[j] = 100 * float(mb.mean())
    vb = inference.vs_best(diffs, level=level)
    best = vb.best or max(acc, key=acc.get)
    d = diffs[best]
    seeds, ma, mb = paired_rows(ra, rb[best], labels)
    row |= {"comparator": f"best other: {best}", "status": "ok", "k": d.k, "n": d.n,
            "method_pct": 100 * float(ma.mean()), "comparator_pct": acc[best], "diff": 100 * vb.diff if vb.m else
            100 * d.diff, "se": 100 * d.se, "df": d.df, "p": math.nan, "sd_rep": 100 * d.sd_rep, "_best": vb}
    return _with_context(row, results, mode, key, labels_of(labels, ma.shape[1]))


def per_class_table(results: Sequence[RunResult], params: Params, ver: pd.DataFrame, labels,
                    classes: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """The regime of every primary cell, per class: clean and robust accuracy (%) of both methods (mean over their
    common replicates) and the robust difference in points. A class where a model is near 0 % clean is where a
    difference can come from a near-constant classifier."""
    from .evaluate import eps_name

    rows = []
    for r in ver[(ver.family == "primary") & (ver.status == "ok")].itertuples():
        got = {key: _pair(results, params, r.mode, r.fraction, key, r.method, r.comparator, labels)
               for key in ("clean", eps_name(r.eps_255 / 255))}
        if any(isinstance(g, str) for g in got.values()):
            continue
        (_, ca, cb, lab), (_, ma, mb, _) = got["clean"], got[eps_name(r.eps_255 / 255)]
        for c in range(int(lab.max()) + 1):
            sel = lab == c
            if not sel.any():
                continue
            a, b = 100 * float(ma[:, sel].mean()), 100 * float(mb[:, sel].mean())
            rows.append({"mode": r.mode, "fraction": r.fraction, "eps_255": r.eps_255,
                         "class": classes[c] if classes else c, "n": int(sel.sum()),
                         f"{r.method} clean %": 100 * float(ca[:, sel].mean()),
                         f"{r.comparator} clean %": 100 * float(cb[:, sel].mean()),
                         f"{r.method} %": a, f"{r.comparator} %": b, "diff": a - b})
    return pd.DataFrame(rows)


REGIME = {"full": {"standard": 65.0, "trades": 50.0}, "comparator": {"standard": 45.0, "trades": 35.0},
          "class_floor": 15.0}
"""Issue 31's regime conditions (clean accuracy, %): the full-data models, the primary comparator's models at the
primary fractions (means over replicates), and no class of a comparator model below class_floor."""


def regime_table(results: Sequence[RunResult], params: Params, labels,
                 classes: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """Every model of the primary family and of the full-data reference, one row per model: clean and robust
    accuracy (%, at the mode's primary eps) on its evaluated images and its weakest class (clean %), so a reader sees
    where each model stands before reading a difference."""
    from .evaluate import eps_name

    pc = params.report.primary
    lab = np.asarray(labels) if labels is not None else None
    rows = []
    for r in results:
        run = r.run
        primary = params.is_primary_group(run.scores, run.method, run.fraction)
        if not r.ok or not (primary or run.method == runs.FULL):
            continue
        key = eps_name(primary_eps(results, params, run.mode)[0]) if run.mode in params.train.modes else "robust"
        clean = r.outcomes["clean"]
        row = {"mode": run.mode, "fraction": run.fraction, "method": run.method, "replicate": run.seed,
               "n": len(clean), "clean %": 100 * float(clean.mean()),
               "robust %": 100 * float(r.outcomes[key].mean()) if key in r.outcomes else math.nan}
        if lab is not None:
            ll = labels_of(lab, len(clean))
            per = [100 * float(clean[ll == c].mean()) for c in range(int(ll.max()) + 1) if (ll == c).any()]
            worst = int(np.argmin(per))
            row |= {"weakest class": classes[worst] if classes else worst, "weakest class clean %": per[worst]}
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["mode", "fraction", "method", "replicate"]).reset_index(drop=True) \
        if rows else pd.DataFrame()


def regime_checks(table: pd.DataFrame, params: Params) -> pd.DataFrame:
    """Issue 31's conditions against `regime_table`: full-data mean clean >= REGIME['full'][mode], the comparator's
    mean clean at each primary fraction >= REGIME['comparator'][mode], and none of its models with a class below
    REGIME['class_floor']; one row per condition with the measured value and whether it holds."""
    pc = params.report.primary
    out = []
    for mode in params.train.modes:
        f = table[(table["mode"] == mode) & (table.method == runs.FULL)]
        if len(f) and mode in REGIME["full"]:
            v = float(f["clean %"].mean())
            out.append({"mode": mode, "condition": f"full data mean clean >= {REGIME['full'][mode]:g} %",
                        "measured": round(v, 1), "holds": v >= REGIME["full"][mode]})
        for fr in params.primary_fractions():
            c = table[(table["mode"] == mode) & (table.method == pc.comparator) & (table.fraction == fr)]
            if not len(c) or mode not in REGIME["comparator"]:
                continue
            v = float(c["clean %"].mean())
            out.append({"mode": mode, "condition": f"{pc.comparator} at {fr:g}: mean clean >= "
                        f"{REGIME['comparator'][mode]:g} %", "measured": round(v, 1),
                        "holds": v >= REGIME["comparator"][mode]})
            if "weakest class clean %" in c:
                w = float(c["weakest class clean %"].min())
                out.append({"mode": mode, "condition": f"{pc.comparator} at {fr:g}: no class below "
                            f"{REGIME['class_floor']:g} % clean (any replicate)", "measured": round(w, 1),
                            "holds": w >= REGIME["class_floor"]})
    return pd.DataFrame(out)


def per_class_analysis(results: Sequence[RunResult], params: Params, ver: pd.DataFrame, labels,
                       classes: Optional[Sequence[str]] = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The pre-specified per-class analysis of every primary cell (easycore/inference.py), two frames:
    tests     one row per cell: the class x method interaction test (replicate as the unit, Greenhouse-Geisser;
              target: these test images) and how many per-class / leave-one-class-out intervals exclude 0;
    classes   one row per (cell, class): the class's difference with its Bonferroni-simultaneous interval over the C
              classes, and the difference without that class (leave-one-class-out, every class) with its interval,
              simultaneous over the C leave-outs, judged against 0. Points."""
    from . import inference
    from .evaluate import eps_name

    level = params.report.primary.level
    tests, per = [], []
    for r in ver[(ver.family == "primary") & (ver.status == "ok")].itertuples():
        got = _pair(results, params, r.mode, r.fraction, eps_name(r.eps_255 / 255), r.method, r.comparator, labels)
        if isinstance(got, str) or got[3] is None:
            continue
        _, ma, mb, lab = got
        d = ma.astype(np.int8) - mb.astype(np.int8)
        it = inference.interaction(d, lab)
        pcs = inference.per_class_diffs(d, lab, level=level)
        loco = inference.leave_one_class_out(d, lab, level=level)
        cell = {"mode": r.mode, "fraction": r.fraction, "eps_255": r.eps_255}
        tests.append(cell | {"K": it.k, "classes": it.classes, "F": it.f, "df1 (GG)": it.df1, "df2 (GG)": it.df2,
                             "GG eps": it.gg_eps, "p interaction": it.p,
                             "classes with a difference": int(sum(x.lo > 0 or x.hi < 0 for x in pcs)),
                             "leave-outs excluding 0": int(sum(x.lo > 0 or x.hi < 0 for x in loco)),
                             "diff": r.diff})
        for c, (x, y) in enumerate(zip(pcs, loco)):
            per.append(cell | {"class": classes[c] if classes else c, "n": x.n, "diff": 100 * x.diff,
                               "lo": 100 * x.lo, "hi": 100 * x.hi,
                               "without class": 100 * y.diff, "without lo": 100 * y.lo, "without hi": 100 * y.hi,
                               "level": x.level})
    return pd.DataFrame(tests), pd.DataFrame(per)


def comparisons(results: Sequence[RunResult], params: Params, mode: str, fraction: float, key: str, *,
                reference: str, level: float = 0.95, labels=None) -> pd.DataFrame:
    """Secondary, unadjusted: `reference` - every other coreset method of (mode, fraction) on outcome `key`, paired
    on their common replicates and test images (inference.paired): difference in points, 95 % interval, p, K, n."""
    from . import inference

    ra = _cell(results, params, mode, reference, fraction, key)
    if ra is None:
        return pd.DataFrame()
    rows = []
    for s, m, f in cells(params, mode):
        if f != fraction or m in (reference, runs.FULL):
            continue
        rb = seed_rows(results, scores=s, method=m, fraction=f, mode=mode, key=key)
        if rb is None:
            continue
        seeds, ma, mb = paired_rows(ra, rb, labels)
        if not seeds:
            continue
        d = inference.paired(ma, mb, level=level)
        word = ("not replicated" if d.k < 2 else "reference better" if d.lo > 0 else
                "reference worse" if d.hi < 0 else "no detectable difference")
        rows.append({"mode": mode, "fraction": fraction, "key": key, "reference": reference, "method": m,
                     "k": d.k, "n": d.n, "diff": 100 * d.diff, "lo": 100 * d.lo, "hi": 100 * d.hi, "p_value": d.p,
                     "verdict": word + (f" (K = {d.k}: indicative)" if 2 <= d.k < INDICATIVE_K else "")})
    return pd.DataFrame(rows)


def _p(p) -> str:
    if not isinstance(p, (float, int)) or math.isnan(p):
        return "-"
    return "< 1e-4" if p < 1e-4 else f"{p:.4f}"


def verdict_markdown(v: pd.DataFrame, family: Optional[str] = None) -> pd.DataFrame:
    """The verdict for reading (points): one row per comparison of `family` (all when None). "diff [CI]" is the
    interval that decided the word (target: new test images and new replicates); "these images" the fixed-test-set
    interval at the same level (target: these test images, new replicates)."""
    rows = []
    for _, r in (v if family is None else v[v.family == family]).iterrows():
        ok = r.get("status") == "ok"
        pct = lambda k: f"{r[k]:.1f}" if ok and pd.notna(r.get(k)) else "-"   # noqa: E731
        ci = (f"{r['diff']:+.1f} [{r['lo']:+.1f}, {r['hi']:+.1f}]" if ok and pd.notna(r.get("lo")) else
              f"{r['diff']:+.1f}" if ok and pd.notna(r.get("diff")) else "-")
        fixed = (f"[{r['fixed_lo']:+.1f}, {r['fixed_hi']:+.1f}]" if ok and pd.notna(r.get("fixed_lo")) else "-")
        row = {"family": r["family"], "mode": r["mode"], "fraction": r["fraction"],
               "eps": f"{r['eps_255']:g}/255" if pd.notna(r.get("eps_255")) else "-",
               "comparison": r["comparison"].replace("best other (Hsu)", r.get("comparator", "best other"))
               if ok else r["comparison"],
               "K x n": f"{int(r['k'])} x {int(r['n'])}" if ok else "-",
               "method % (clean)": f"{pct('method_pct')} ({pct('method_clean_pct')})",
               "comparator % (clean)": f"{pct('comparator_pct')} ({pct('comparator_clean_pct')})",
               "diff [CI] (points)": ci,
               "CI": (f"{100 * r['ci_level']:.2f}%, {r['ci_kind']}" if ok and pd.notna(r.get("lo")) else "-"),
               "these images [CI]": fixed,
               "p (Holm)": _p(r.get("p_holm")) if r["family"] == "primary" else "secondary",
               "MDE": f"{r['mde']:.1f}" if pd.notna(r.get("mde")) else "-",
               "verdict": r["verdict"],
               "full data % (clean)": f"{pct('full_pct')} ({pct('full_clean_pct')})",
               "chance %": pct("chance_pct")}
        rows.append(row)
    return pd.DataFrame(rows)


def verdict_headline(v: pd.DataFrame) -> pd.DataFrame:
    """The primary family in the fewest columns a reader needs (the README's table): the cell, K x n, both methods'
    robust (clean) accuracy, the deciding interval, the fixed-test-set interval, the MDE and the word."""
    md = verdict_markdown(v, "primary")
    if md.empty:
        return md
    out = md[["mode", "fraction", "eps", "K x n", "method % (clean)", "comparator % (clean)", "diff [CI] (points)",
              "these images [CI]", "MDE", "verdict"]].copy()
    prim = v[v.family == "primary"].iloc[0]
    return out.rename(columns={"method % (clean)": f"{_label(prim['method'])} % (clean)",
                               "comparator % (clean)": f"{_label(prim['comparator'])} % (clean)",
                               "diff [CI] (points)": "difference [CI] (points)"})


def attacked_labels(params: Params, prepared: Path = Path("data/prepared")) -> Optional[np.ndarray]:
    """Labels of the attacked test images of the largest evaluation (the prepared test set at
    evaluate.test_positions for max(eval.n_test, eval.primary_n_test)), None when the prepared set is absent."""
    from .evaluate import test_positions
    from .store import load_tensors

    f = Path(prepared) / "test.safetensors"
    if not f.exists():
        return None
    y = load_tensors(f)[0]["y"].numpy()
    return y[test_positions(y, max(params.eval.n_test, params.eval.primary_n_test))]


def autoattack_outcomes(root: Path = runs.ROOT / "autoattack") -> dict:
    """{run key: {robust, robust_aa}} of every model the autoattack stage attacked; {} when it has not run."""
    path = Path(root) / "summary.json"
    if not path.exists():
        return {}
    out = {}
    for key in read_json(path)["runs"]:
        f = Path(root) / key / "outcomes.npz"
        arrays, meta = load_arrays(f)
        out[key] = check_outcomes(f, arrays, meta.get("n"))
    return out


def autoattack_table(params: Params, root: Path = runs.ROOT / "autoattack", *, outcomes: Optional[dict] = None,
                     n_boot: int = 4000) -> pd.DataFrame:
    """Does the ranking survive AutoAttack? For each model the autoattack stage attacked (the verdict's: full data,
    EasyCore, random, best other; per mode and fraction, pooled over seeds): robust accuracy on the
    eval.autoattack_n test images spread over the classes before and after AutoAttack, mean [95 % CI] in %.
    `outcomes` ({run key: {robust, robust_aa}}, as `read_outcomes` returns) replaces reading the stage's files
    under `root`."""
    if outcomes is None:
        outcomes = autoattack_outcomes(root)
    cells: dict = {}
    for key in sorted(outcomes):
        r = runs.parse(key)
        cells.setdefault((r.mode, r.fraction, r.method), []).append((r.seed, outcomes[key]))
    rows = []
    for (mode, f, method), seeds in sorted(cells.items()):
        seeds.sort(key=lambda t: t[0])
        row = {"mode": mode, "fraction": f, "method": method, "n_seeds": len(seeds), "n_test": len(seeds[0][1]["robust"])}
        for k in ("robust", "robust_aa"):
            st = accuracy_stat(np.stack([a[k] for _, a in seeds]), n_boot=n_boot)
            row[k] = f"{100 * st.mean:.1f} [{100 * st.lo:.1f}, {100 * st.hi:.1f}]"
            row[f"{k}_mean"] = st.mean
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["rank before"] = df.groupby(["mode", "fraction"])["robust_mean"].rank(ascending=False, method="min")
    df["rank with AutoAttack"] = df.groupby(["mode", "fraction"])["robust_aa_mean"].rank(ascending=False, method="min")
    return df.drop(columns=["robust_mean", "robust_aa_mean"])


def curves(results: Sequence[RunResult], params: Params, mode: str, fraction: float, *,
           n_boot: int = 2000) -> pd.DataFrame:
    """Robust accuracy vs eps (worst case, monotone) per method with 95 % CIs, for (mode, fraction); the full-data
    reference included. Long frame: method, eps, mean, lo, hi (fractions in [0, 1]), n_seeds. The eps: eval.eps_grid
    and the mode's headline eps (eval.mode_eps, else eval.eps: the eps its models were attacked at)."""
    from .evaluate import eps_name

    rows = []
    grid = sorted(set(params.eval.eps_grid) | {params.eval.for_mode(mode).eps})
    for scores, method, f in cells(params, mode):
        if f not in (fraction, 1.0) or (f == 1.0 and method != runs.FULL):
            continue
        for eps in grid:
            m = outcome_matrix(results, scores=scores, method=method, fraction=f, mode=mode, key=eps_name(eps))
            if m is not None:
                s = accuracy_stat(m, n_boot=n_boot)
                rows.append({"method": method, "eps": eps, "mean": s.mean, "lo": s.lo, "hi": s.hi,
                             "n_seeds": s.n_seeds})
    return pd.DataFrame(rows)


def summary(results: Sequence[RunResult], params: Params, *, n_boot: int = 2000) -> dict:
    """The top-level DVC metric: mode -> method -> fraction -> {robust, clean: {mean, lo, hi}, n_seeds, n_test}
    (numbers only, rounded), so `dvc exp show` / `dvc metrics diff` fit on a screen."""
    out: dict = {}
    for mode in params.train.modes:
        for scores, method, f in cells(params, mode):
            cell = {}
            for key in ("robust", "clean"):
                m = outcome_matrix(results, scores=scores, method=method, fraction=f, mode=mode, key=key)
                if m is None:
                    continue
                s = accuracy_stat(m, n_boot=n_boot)
                cell[key] = {"mean": round(s.mean, 4), "lo": round(s.lo, 4), "hi": round(s.hi, 4)}
                cell["n_seeds"], cell["n_test"] = s.n_seeds, s.n_test
            if cell:
                out.setdefault(mode, {}).setdefault(method, {})[fraction_name(f)] = cell
    return out


# ----------------------------------------------------------------------------- output
def to_markdown(df: pd.DataFrame, caption: Optional[str] = None, index: bool = True) -> str:
    md = df.to_markdown(index=index)
    return f"{caption}\n\n{md}\n" if caption else f"{md}\n"


def save_table(df: pd.DataFrame, stem: str, *, caption: Optional[str] = None, out_dir: str | os.PathLike = TABLES,
               index: bool = True, csv: Optional[pd.DataFrame] = None) -> tuple[Path, Path]:
    """Write out_dir/<stem>.md (caption, blank line, Markdown table) and out_dir/<stem>.csv, atomically. `csv`: a
    machine-readable (numeric, no Markdown) frame to write instead of `df` to the CSV."""
    out_dir = Path(out_dir)
    staged(out_dir).mkdir(parents=True, exist_ok=True)
    md, csv_path = out_dir / f"{stem}.md", out_dir / f"{stem}.csv"
    with atomic_path(staged(md)) as tmp:
        tmp.write_text(to_markdown(df, caption, index=index))
    buf = io.StringIO()
    (csv if csv is not None else df).to_csv(buf, index=index if csv is None else False, float_format="%.6g")
    with atomic_path(staged(csv_path)) as tmp:
        tmp.write_text(buf.getvalue())
    return md, csv_path


def save_json(obj, path: str | os.PathLike) -> Path:
    from .store import write_json

    write_json(staged(path), obj)
    return Path(path)


def save_figure(fig, stem: str, formats: Sequence[str] = ("png", "svg"), *,
                out_dir: str | os.PathLike = FIGURES, dpi: int = 150) -> list[Path]:
    """Save `fig` as out_dir/<stem>.<fmt> for each format (PNG at `dpi`), atomically, byte-stably (no timestamps,
    fixed SVG ids)."""
    import matplotlib

    out_dir = Path(out_dir)
    staged(out_dir).mkdir(parents=True, exist_ok=True)
    meta = {"png": {"Software": None}, "svg": {"Date": None}, "pdf": {"CreationDate": None, "ModDate": None}}
    paths = []
    for fmt in formats:
        p = out_dir / f"{stem}.{fmt}"
        # svg.hashsalt: the SVG's clip-path ids are hashes salted with a random value unless a salt is given
        with atomic_path(staged(p), suffix=f".{fmt}") as tmp, matplotlib.rc_context({"svg.hashsalt": "easycore"}):
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight", metadata=meta.get(fmt))
        paths.append(p)
    return paths


def hardware() -> str:
    """'<n> CPU cores (<processor>)' or the CUDA device name(s)."""
    import torch

    if torch.cuda.is_available():
        return ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    return f"{os.cpu_count()} CPU cores ({platform.machine()}), no GPU"


def pipeline_minutes(timings: Path = Path("runs/timings")) -> Optional[float]:
    """Sum of the recorded stage wall times (proxy, train, evaluate runs; the report stages not included)."""
    files = list(Path(timings).rglob("*.json")) if Path(timings).is_dir() else []
    total = 0.0
    for f in files:
        try:
            total += float(json.loads(f.read_text())["seconds"])
        except (OSError, ValueError, KeyError):
            continue
    return round(total / 60, 1) if files else None


def scale_caption(params: Params, info: Optional[dict] = None, *, what: str = "") -> str:
    """One caption line stating the scale: dataset, subset sizes, model, epochs, seeds, attacks, hardware (no wall
    time: a report output re-made from the same runs has the same bytes; see `timing_table`)."""
    d, t, e = params.data, params.train, params.eval
    n_tr = info["train"]["n"] if info else None
    n_te = info["test"]["n"] if info else None
    sub = "full training set" if d.n_per_class is None else f"{d.n_per_class}/class"
    strong = f" + {', '.join(e.strong)} on survivors" if e.strong else ""
    aa = ""
    n_att = f"{min(e.n_test, n_te or e.n_test)} test images attacked"
    if e.primary_n_test and e.primary_n_test != e.n_test:
        n_att = (f"{min(e.primary_n_test, n_te or e.primary_n_test)} test images attacked for the primary family, "
                 f"{min(e.n_test, n_te or e.n_test)} for the other groups")
    eps = (", ".join(f"{m} {e.for_mode(m).eps * 255:g}/255" for m in t.modes) if e.mode_eps else
           f"{e.eps * 255:.0f}/255")
    full = (f"; full-data reference {t.full_epochs} epochs, {len(t.full_data_seeds())} replicates"
            if t.full_epochs or t.full_seeds else "")
    return (f"*{what}Scale: {d.dataset} {sub} ({n_tr} train samples), {n_att}; model {t.model}, {t.epochs} epochs "
            f"(batch {t.batch_size}){full}; TRADES beta {t.attack.beta}, "
            f"{t.attack.steps} steps; robust = per-image worst case over {', '.join(e.attacks)} at Linf eps "
            f"{eps} (PGD-{e.pgd_steps}){strong}{aa}; proxy {params.proxy.model} "
            f"{params.proxy.epochs} epochs; {len(t.seeds)} whole-pipeline replicate"
            f"{'s' if len(t.seeds) > 1 else ''} (seeds {t.seeds}; secondary groups: {t.secondary_seeds()}); "
            f"hardware: {hardware()}. Intervals: 95 %, the replicate as the unit (crossed test images x replicates, "
            f"t with Satterthwaite df >= K - 1; over test images alone where a cell has one replicate); bold only where the "
            f"paired interval against the runner-up excludes 0.*")


def jaccard(a: Iterable[int], b: Iterable[int]) -> float:
    a, b = set(map(int, a)), set(map(int, b))
    return len(a & b) / len(a | b) if (a or b) else 1.0


def spearman_matrix(scores: dict[str, np.ndarray]) -> pd.DataFrame:
    """Spearman rank correlation between every pair of score vectors (same length), as a DataFrame."""
    from scipy.stats import spearmanr

    names = list(scores)
    m = np.eye(len(names))
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            a, b = np.asarray(scores[names[i]], float), np.asarray(scores[names[j]], float)
            ok = np.isfinite(a) & np.isfinite(b)
            m[i, j] = m[j, i] = spearmanr(a[ok], b[ok]).statistic if ok.sum() > 2 else np.nan
    return pd.DataFrame(m, index=names, columns=names)


# ----------------------------------------------------------------------------- proxy-side tables (no training)
def aign_stability(arrays: Mapping[str, np.ndarray], *, p: float = 2.0, window: str = "all", squared: bool = False,
                   fraction: float = 0.3) -> pd.DataFrame:
    """Per tracked epoch: Spearman of that epoch's input-gradient norms with the final AIGN and with the next epoch,
    Jaccard of the easiest `fraction` by that epoch vs by AIGN, and (mode both) inline vs exact Spearman."""
    from .aign import spearman
    from .coresets import aign, budget, norm_key

    score = aign(arrays, window=window, p=p, squared=squared)
    m = np.asarray(arrays[norm_key(p)], dtype=float)
    epochs = [int(e) + 1 for e in arrays["tracked_epochs"]]
    k = budget(fraction, len(score))
    final = np.argsort(score, kind="stable")[:k]
    rows = []
    for i, e in enumerate(epochs):
        row = {"epoch": e, "spearman_vs_AIGN": spearman(m[i], score),
               "spearman_vs_next_epoch": spearman(m[i], m[i + 1]) if i + 1 < len(epochs) else np.nan,
               f"jaccard_easiest_{fraction:g}_vs_AIGN": jaccard(np.argsort(m[i], kind="stable")[:k], final)}
        if "aign_inline_l2" in arrays:
            row["spearman_inline_vs_exact"] = spearman(arrays["aign_inline_l2"][i], arrays["aign_l2"][i])
        rows.append(row)
    return pd.DataFrame(rows).set_index("epoch")


def method_score_table(arrays: Mapping[str, np.ndarray], labels: np.ndarray, opts) -> tuple[dict, dict]:
    """The per-sample score of every static method that has its own (one column per distinct score), and, for
    every method left out, why: ({name: scores}, {name: reason}). Nothing is dropped without a reason."""
    from .coresets import method_scores
    from .methods import METHODS

    scores, skipped, seen = {}, {}, {}
    for name, e in METHODS.items():
        if e.kind != "static":
            continue
        if not e.score:
            skipped[name] = "no per-sample score (its own selection rule)"
            continue
        key = opts.ccs_score if name == "ccs" else e.score
        if key in seen:
            skipped[name] = f"same score as {seen[key]}"
            continue
        missing = [k for k in e.needs if k not in ("aign", "ccs_score") and k not in arrays]
        if missing:
            skipped[name] = f"the proxy artifact lacks {missing}"
            continue
        scores[name] = method_scores(name, arrays, labels=labels, balanced=opts.balanced, window=opts.window,
                                     p=opts.p, squared=opts.squared, score_epochs=opts.score_epochs,
                                     ccs_score=opts.ccs_score)
        seen[key] = name
    return scores, skipped


def ablation_variants(arrays: Mapping[str, np.ndarray], coreset) -> dict[str, dict]:
    """The AIGN variants of `ablation_table`: {name: the coreset options it changes} (window first / last K = a third
    of the tracked epochs, all; norm L1, L2, Linf; squared L2; balanced, global), those of norms the proxy did not
    record left out (inline AIGN has L2 alone)."""
    from .aign import norm_key

    e = np.asarray(arrays["aign_l2"]).shape[0]
    k = max(1, e // 3)
    variants = {"default": {}, f"window first:{k}": {"window": f"first:{k}"}, f"window last:{k}": {"window": f"last:{k}"},
                "window all": {"window": "all"}, "norm L1": {"p": 1.0}, "norm L2": {"p": 2.0},
                "norm Linf": {"p": math.inf}, "squared L2": {"squared": True, "p": 2.0}, "balanced": {"balanced": True},
                "global": {"balanced": False}}
    return {n: v for n, v in variants.items() if norm_key(float(v.get("p", coreset.p))) in arrays}


def default_variants(arrays: Mapping[str, np.ndarray], coreset) -> list[str]:
    """The variants of `ablation_variants` other than 'default' whose options equal the default's (e.g. 'window
    all' when coreset.window is all): the default again under another name."""
    base = dict(window=coreset.window, p=float(coreset.p), squared=coreset.squared, balanced=coreset.balanced)
    return [n for n, ch in ablation_variants(arrays, coreset).items()
            if n != "default" and {**base, **{k: (float(v) if k == "p" else v) for k, v in ch.items()}} == base]


def ablation_table(arrays: Mapping[str, np.ndarray], labels: np.ndarray, coreset) -> tuple[pd.DataFrame, dict]:
    """EasyCore's selection under AIGN variants (window first/last K, norm, squared, balanced vs global) against the
    configured default, per fraction: Jaccard and Spearman vs the default, smallest class share (only the norms the
    proxy recorded: inline AIGN has L2 alone). Returns (table,
    {(fraction, variant): indices})."""
    from .aign import spearman
    from .coresets import aign, select

    base = dict(window=coreset.window, p=coreset.p, squared=coreset.squared, balanced=coreset.balanced)
    variants = ablation_variants(arrays, coreset)
    rows, sels = [], {}
    for f in coreset.fractions:
        ref_score = aign(arrays, window=base["window"], p=base["p"], squared=base["squared"])
        ref_sel = select("easycore", arrays, labels, f, seed=coreset.seed, **base)
        for name, ch in variants.items():
            o = {**base, **ch}
            s = aign(arrays, window=o["window"], p=o["p"], squared=o["squared"])
            sel = select("easycore", arrays, labels, f, seed=coreset.seed, **o)
            sels[(f, name)] = sel
            rows.append({"fraction": f, "variant": name, "jaccard_vs_default": jaccard(sel, ref_sel),
                         "spearman_vs_default": spearman(s, ref_score),
                         "min_class_share": np.bincount(labels[sel], minlength=labels.max() + 1).min() / len(sel)})
    return pd.DataFrame(rows).set_index(["fraction", "variant"]), sels


def hardness_vs_vulnerability(aign: np.ndarray, deepfool: np.ndarray, sub: np.ndarray, flip_eps: np.ndarray,
                              correct: np.ndarray) -> pd.DataFrame:
    """Spearman (and p-value) of AIGN against the DeepFool distance (all samples) and against the smallest flipping
    eps (a subset; also only its correctly classified samples), and DeepFool vs flipping eps. The paper's claim
    predicts negative AIGN correlations (low AIGN = far from the boundary)."""
    from scipy.stats import spearmanr

    ok = np.asarray(correct, bool)
    pairs = [("AIGN vs DeepFool distance", "all training samples", aign, deepfool),
             ("AIGN vs min flipping eps (PGD)", "random subset", aign[sub], flip_eps),
             ("AIGN vs min flipping eps (PGD)", "subset, correctly classified", aign[sub][ok], flip_eps[ok]),
             ("DeepFool distance vs min flipping eps", "random subset", deepfool[sub], flip_eps)]
    rows = []
    for pair, samples, a, b in pairs:
        r = spearmanr(a, b) if len(a) > 2 else None
        rows.append({"pair": pair, "samples": samples, "n": len(a),
                     "spearman": float(r.statistic) if r is not None else np.nan,
                     "p_value": float(r.pvalue) if r is not None else np.nan})
    return pd.DataFrame(rows)


def replicate_summary(per_rep: pd.DataFrame, by: Sequence[str], value: str, *, level: float = 0.95) -> pd.DataFrame:
    """Mean over replicates of `value` per group `by`, with the t interval whose unit is the replicate (K - 1 df;
    nan with one replicate): columns by..., K, mean, lo, hi, values (each replicate's, in order)."""
    from scipy import stats as st

    rows = []
    for key, g in per_rep.groupby(list(by), sort=False):
        v = g[value].astype(float).to_numpy()
        k = len(v)
        m = float(v.mean()) if k else math.nan
        if k > 1:
            h = float(st.t.ppf(0.5 + level / 2, k - 1) * v.std(ddof=1) / math.sqrt(k))
            lo, hi = m - h, m + h
        else:
            lo = hi = math.nan
        rows.append(dict(zip(by, key if isinstance(key, tuple) else (key,)), K=k, mean=m, lo=lo, hi=hi,
                         values=", ".join(f"{x:.3f}" for x in v)))
    return pd.DataFrame(rows)


def claim_reading(rho: float) -> str:
    """How a correlation reads against the claim that easy (low-AIGN) samples are the less vulnerable ones."""
    if rho < -0.1:
        return "supports"
    return "contradicts" if rho > 0.1 else "neither supports nor contradicts (|rho| <= 0.1)"
