"""The exported per-image outcomes (report.export_outcomes / read_outcomes): a round trip keeps every bit and the
verdict; and the committed study's verdict table is recomputed from its committed outcomes without retraining."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from easycore import report
from easycore.pipeline import runs
from easycore.config import load_params
from easycore.store import ArtifactError, save_arrays

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "reports" / "study-small"


def _fake_results(n=37, seeds=(0, 1), rng=np.random.default_rng(0)):
    out = []
    for method, p in (("easycore", 0.6), ("random", 0.4)):
        for seed in seeds:
            run = runs.Run("main", method, 0.1, "standard", seed)
            clean = rng.random(n) < 0.8
            out.append(report.RunResult(run, "ok", {}, {"clean": clean, "robust": clean & (rng.random(n) < p)}))
    out.append(report.RunResult(runs.Run("main", "hard", 0.1, "standard", 0), "missing (not evaluated)"))
    return out


def test_round_trip_keeps_every_bit(tmp_path):
    res = _fake_results()
    path = report.export_outcomes(res, tmp_path / "o.npz", autoattack_root=None, scale="test")
    again = report.export_outcomes(res, tmp_path / "o2.npz", autoattack_root=None, scale="test")
    assert path.read_bytes() == again.read_bytes()                       # byte-stable
    back, aa = report.read_outcomes(path)
    assert aa == {}
    by = {r.run: r for r in back}
    for r in res:
        if r.ok:
            assert set(by[r.run].outcomes) == set(r.outcomes)
            for k, v in r.outcomes.items():
                np.testing.assert_array_equal(by[r.run].outcomes[k], v)
    assert runs.Run("main", "hard", 0.1, "standard", 0) not in by       # a missing run is not invented


def test_runs_on_fewer_images_round_trip_and_unequal_counts_within_a_run_are_refused(tmp_path):
    """Runs evaluated on fewer test images (eval.n_test < eval.primary_n_test) keep their own n (meta n_runs) and come
    back bit for bit; one run whose outcomes differ in length, or labels that do not fit the largest evaluation,
    are refused and nothing is written."""
    res = _fake_results()
    res[0] = report.RunResult(res[0].run, "ok", {}, {"clean": np.ones(5, bool), "robust": np.zeros(5, bool)})
    labels = np.arange(37) % 10
    path = report.export_outcomes(res, tmp_path / "o.npz", autoattack_root=None, labels=labels)
    back, _ = report.read_outcomes(path)
    by = {r.run: r for r in back}
    for r in res:
        if r.ok:
            for k, v in r.outcomes.items():
                np.testing.assert_array_equal(by[r.run].outcomes[k], v)
    np.testing.assert_array_equal(report.read_labels(path), labels)
    bad = list(res)
    bad[1] = report.RunResult(res[1].run, "ok", {}, {"clean": np.ones(5, bool), "robust": np.ones(6, bool)})
    with pytest.raises(ValueError, match="different numbers of images"):
        report.export_outcomes(bad, tmp_path / "bad.npz", autoattack_root=None)
    with pytest.raises(ValueError, match="labels for evaluations"):
        report.export_outcomes(res, tmp_path / "bad.npz", autoattack_root=None, labels=labels[:30])
    assert not (tmp_path / "bad.npz").exists()


def test_other_npz_refused(tmp_path):
    save_arrays(tmp_path / "x.npz", {"a": np.zeros(3)}, {"n": 3})
    with pytest.raises(ArtifactError, match="not an easycore outcomes file"):
        report.read_outcomes(tmp_path / "x.npz")


@pytest.mark.skipif(not (STUDY / "outcomes.npz").exists(), reason="no committed study under reports/study-small")
def test_committed_study_verdict_recomputed_from_committed_outcomes():
    """The committed verdict table (reports/study-small/tables/coresets/verdict.csv) equals the verdict recomputed from
    the committed per-image outcomes and labels (closed forms: no Monte-Carlo): same numbers, same words."""
    params = load_params(ROOT / "params-study-small.yaml")
    results, aa = report.read_outcomes(STUDY / "outcomes.npz", params)
    assert all(r.ok for r in results), [r.run.key for r in results if not r.ok][:5]
    assert len(results) == len(runs.expected_runs(params))
    got = report.verdict(results, params, labels=report.read_labels(STUDY / "outcomes.npz")).round(4)
    want = pd.read_csv(STUDY / "tables" / "coresets" / "verdict.csv")
    assert list(got.columns) == list(want.columns)
    for c in want.columns:
        if want[c].dtype.kind in "fi":
            np.testing.assert_allclose(got[c].astype(float), want[c].astype(float), atol=1e-4, err_msg=c)
        else:
            assert got[c].fillna("").astype(str).tolist() == want[c].fillna("").astype(str).tolist(), c
    if aa:
        assert not report.autoattack_table(params, outcomes=aa).empty
