"""Per-image outcomes of every run: read from the runs or from an exported outcomes file, checked, written; a cell's outcomes by replicate and the images two cells share."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from easycore.config import Params
from easycore.pipeline import runs
from easycore.report.publish import staged
from easycore.store import ArtifactError, load_arrays, read_json, save_arrays


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
    from easycore.core.evaluate import test_positions

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


def attacked_labels(params: Params, prepared: Path = Path("data/prepared")) -> Optional[np.ndarray]:
    """Labels of the attacked test images of the largest evaluation (the prepared test set at
    evaluate.test_positions for max(eval.n_test, eval.primary_n_test)), None when the prepared set is absent."""
    from easycore.core.evaluate import test_positions
    from easycore.store import load_tensors

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
