"""`easycore adopt` (easycore/report/adopt.py): a finished profile clone's report folder comes into the workspace
whole, with its provenance, and every reason it could be misattributed (unfinished, other code, another profile, a
commit outside the history) is one error that leaves the workspace's folder as it was."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from easycore.config import ConfigError
from easycore.report import adopt as ad
from easycore.store import ArtifactError

ROOT = Path(__file__).resolve().parents[1]
PROFILE = "params-study-v2.yaml"   # report.dir: reports/study-v2
REPORT = "reports/study-v2"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def _commit_all(repo: Path, msg: str) -> None:
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", msg)


LOCK = """schema: '2.0'
stages:
  prepare:
    cmd: easycore prepare
    outs:
    - path: data/prepared
      md5: 1.dir
  report_coresets:
    cmd: easycore notebook coresets
    outs:
    - path: reports/study-v2/tables/coresets
      md5: 2.dir
    - path: reports/study-v2/summary.json
      md5: '3'
"""


@pytest.fixture
def ws(tmp_path):
    """A workspace (git, dvc.yaml, the profile, code, reports of its own) and a finished clone of it whose dvc.lock
    names two report outputs under reports/study-v2/."""
    w = tmp_path / "ws"
    w.mkdir()
    _git(w, "init", "-q")
    (w / "dvc.yaml").write_text("stages: {}\n")
    shutil.copy(ROOT / "params.yaml", w / "params.yaml")
    shutil.copy(ROOT / PROFILE, w / PROFILE)
    (w / "code.py").write_text("x = 1\n")
    (w / "matrix.yaml").write_text("{}\n")
    (w / REPORT / "tables" / "coresets").mkdir(parents=True)
    (w / REPORT / "tables" / "coresets" / "old.md").write_text("| old |\n")   # in an output folder: goes
    (w / REPORT / "summary.json").write_text('{"old": true}\n')
    (w / REPORT / "notes.md").write_text("not an output of the run\n")         # stays
    (w / "reports" / "study").mkdir()
    (w / "reports" / "study" / "x.md").write_text("another study\n")           # stays
    (w / "reports" / "benchmarks.md").write_text("# Benchmarks\n")             # stays
    _commit_all(w, "ws")
    c = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(w), str(c)], check=True)
    shutil.copy(w / PROFILE, c / "params.yaml")            # what `make profile` does
    (c / "matrix.yaml").write_text("runs: [a]\n")
    (c / "dvc.lock").write_text(LOCK)
    shutil.rmtree(c / REPORT / "tables")
    (c / REPORT / "tables" / "coresets").mkdir(parents=True)
    (c / REPORT / "tables" / "coresets" / "verdict.md").write_text("| a | b |\n|---|---|\n| 1 | 2 |\n")
    (c / REPORT / "tables" / "coresets" / ".verdict.md.x1y2.tmp.md").write_text("half")
    (c / REPORT / "summary.json").write_text('{"n_test": 10000}\n')
    return w, c


def _before(w: Path) -> dict:
    return {p.relative_to(w).as_posix(): p.read_bytes() for p in sorted((w / "reports").rglob("*")) if p.is_file()}


def test_adopts_the_whole_folder_with_provenance_and_no_temporary_files(ws):
    w, c = ws
    prov = ad.adopt(c, profile=w / PROFILE, here=w, pending=lambda repo: [])
    got = {p.relative_to(w / REPORT).as_posix() for p in (w / REPORT).rglob("*") if p.is_file()}
    assert got == {"tables/coresets/verdict.md", "summary.json", "notes.md", "provenance.json", "pipeline.lock"}
    assert (w / "reports" / "study" / "x.md").read_text() == "another study\n"
    assert (w / "reports" / "benchmarks.md").read_text() == "# Benchmarks\n"
    assert (w / REPORT / "summary.json").read_text() == '{"n_test": 10000}\n'
    assert (w / REPORT / "pipeline.lock").read_bytes() == (c / "dvc.lock").read_bytes()
    rec = json.loads((w / REPORT / "provenance.json").read_text())
    assert rec == prov and rec["commit"] == _git(c, "rev-parse", "HEAD").strip()
    assert rec["report_dir"] == REPORT
    assert rec["params_sha256"] == ad._sha256(w / PROFILE)
    assert not [p for p in (w / "reports").iterdir() if p.name.startswith(".")]


def test_identical_runs_adopt_identical_bytes(ws):
    w, c = ws
    ad.adopt(c, here=w, pending=lambda repo: [])
    first = _before(w)
    ad.adopt(c, here=w, pending=lambda repo: [])
    assert _before(w) == first


@pytest.mark.parametrize("break_it, error, words", [
    ("unfinished", ArtifactError, "not finished"),
    ("code", ArtifactError, "differs from its commit"),
    ("not_an_output", ArtifactError, "differs from its commit"),
    ("profile", ConfigError, "ran another profile"),
    ("history", ArtifactError, "not in this repository's history"),
    ("no_lock", ArtifactError, "never ran"),
    ("not_a_clone", ConfigError, "not a profile clone"),
])
def test_refusals_leave_the_workspace_as_it_was(ws, break_it, error, words):
    w, c = ws
    pending = (lambda repo: ["train@main/easycore-0.1-trades", "evaluate@x"]) if break_it == "unfinished" else \
        (lambda repo: [])
    if break_it == "code":
        (c / "code.py").write_text("x = 2\n")
    if break_it == "not_an_output":   # under reports/, but no stage writes it
        (c / "reports" / "benchmarks.md").write_text("# changed in the clone\n")
    if break_it == "profile":
        (c / "params.yaml").write_text((c / "params.yaml").read_text() + "\n# edited\n")
    if break_it == "history":
        (c / "extra.py").write_text("y = 1\n")
        _commit_all(c, "a commit the workspace does not have")
    if break_it == "no_lock":
        (c / "dvc.lock").unlink()
    if break_it == "not_a_clone":
        shutil.rmtree(c / ".git")
    before = _before(w)
    with pytest.raises(error, match=words):
        ad.adopt(c, profile=w / PROFILE, here=w, pending=pending)
    assert _before(w) == before
    assert not [p for p in (w / "reports").iterdir() if p.name.startswith(".")]


def test_report_outputs_are_the_lock_outs_under_the_report_folder(tmp_path):
    lock = tmp_path / "dvc.lock"
    lock.write_text("stages:\n  a:\n    outs:\n    - path: reports/tables/coresets\n    - path: reports-x/t.md\n"
                    "    - path: reports/summary.json\n  b:\n    outs:\n    - path: runs/proxy/main\n  c:\n"
                    "    cmd: x\n")
    assert ad.report_outputs(lock, "reports") == ["reports/summary.json", "reports/tables/coresets"]
    assert ad.report_outputs(lock, "reports/study-v2") == []


def test_a_failure_while_swapping_puts_back_what_was_swapped(ws, monkeypatch):
    w, c = ws
    before = _before(w)
    real = Path.rename

    def rename(self, target):
        if ".adopt.tmp" in str(self) and Path(target).name == "summary.json":
            raise OSError("disk full")
        return real(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(OSError, match="disk full"):
        ad.adopt(c, here=w, pending=lambda repo: [])
    assert _before(w) == before
    assert not [p for p in (w / "reports").iterdir() if p.name.startswith(".")]


def test_a_failure_while_copying_restores_the_old_folder(ws, monkeypatch):
    w, c = ws
    before = _before(w)

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ad.shutil, "copyfile", broken)
    with pytest.raises(OSError, match="disk full"):
        ad.adopt(c, here=w, pending=lambda repo: [])
    assert _before(w) == before
    assert not [p for p in (w / "reports").iterdir() if p.name.startswith(".")]


def test_dvc_pending_lists_what_dvc_status_would_run(tmp_path):
    """The one real call into DVC: a stage not yet run is listed; after `dvc repro` nothing is."""
    r = tmp_path / "r"
    r.mkdir()
    _git(r, "init", "-q")
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run(dvc + ["init", "-q"], cwd=r, check=True)
    (r / "dvc.yaml").write_text("stages:\n  make_out:\n    cmd: echo hi > out.txt\n    outs: [out.txt]\n"
                                "  probe:\n    cmd: echo x > probe.txt\n    always_changed: true\n"
                                "    outs: [probe.txt]\n")
    assert ad.dvc_pending(r) == ["make_out", "probe"]
    subprocess.run(dvc + ["repro", "-q"], cwd=r, check=True, capture_output=True)
    assert ad.dvc_pending(r) == []            # the always-changed probe does not count once it has run


def test_cli_refusal_is_one_line(tmp_path, monkeypatch, capsys):
    from easycore.cli import main

    monkeypatch.chdir(ROOT)
    assert main(["adopt", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a profile clone" in err[0]
