"""Bring a finished profile run's reports into the workspace (`easycore adopt DIR`, `make adopt PROFILE=...`).

`make profile` runs a params profile by plain `dvc repro` in a clone beside the workspace (its PROFILE_DIR). When it
has finished, its report folder (`report.dir` of its params.yaml, e.g. reports/study-v2/) is what the workspace
commits. `adopt` copies it, and only after checking that the copy can be attributed:

- the run is finished: `dvc status` in the clone reports no stage to run (a run cut off half-way, or a params file
  edited after it ran, is refused: its reports are not those of its pipeline);
- the clone runs its commit's code: no tracked file differs from its HEAD except the files `make profile` writes
  (params.yaml, dvc.lock, matrix.yaml) and the reports themselves;
- that commit is in the workspace's history (a result is cited by the commit that made it);
- with `--profile FILE`, the clone's params.yaml is that file byte for byte.

The folder is replaced whole and atomically (copied beside it, then renamed into place; temporary `.*.tmp*` files of
an interrupted writer are left out); `<report.dir>/provenance.json` records the commit, the hashes of the params file
and of dvc.lock, and `<report.dir>/pipeline.lock` is the clone's dvc.lock (with the DVC remote, `dvc pull` of that
lock restores every output the reports were made from). Then the tables README.md and docs/*.md copy from reports/
are re-copied (`easycore tables`). Any refusal is one error and leaves the workspace as it was.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Optional

from easycore.config import ConfigError, load_params
from easycore.report.docs_tables import run as tables_run
from easycore.store import ArtifactError

WRITTEN_BY_PROFILE = ("params.yaml", "dvc.lock", "matrix.yaml")
"""The tracked files `make profile` itself changes in its clone (the profile, its lock, the run matrix)."""

SKIP = ".*.tmp*"
"""An interrupted atomic write's temporary file (easycore.store.atomic_path): never adopted."""


def _git(repo: Path, *args: str) -> str:
    r = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise ArtifactError(f"git {' '.join(args)} in {repo} failed: {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


def dvc_pending(repo: Path) -> list[str]:
    """The stages `dvc status` would run in `repo` (empty: every stage's outputs are current)."""
    from contextlib import chdir

    from dvc.repo import Repo

    with chdir(repo), Repo(".") as r:      # stage names as `dvc status` prints them there
        return sorted(r.status())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_clone(clone: Path, *, profile: Optional[Path] = None, here: Path = Path("."),
                pending: Callable[[Path], list[str]] = dvc_pending) -> dict:
    """Every check of the module docstring; returns the provenance record. Raises ConfigError / ArtifactError."""
    clone, here = Path(clone), Path(here)
    params_file = clone / "params.yaml"
    if not (clone / ".git").exists() or not params_file.is_file():
        raise ConfigError(f"{clone} is not a profile clone (no .git or params.yaml there); give the folder "
                          "`make profile` ran in (its PROFILE_DIR, e.g. ../easycore-study-v2)")
    if profile is not None and Path(profile).read_bytes() != params_file.read_bytes():
        raise ConfigError(f"{clone}/params.yaml is not {profile}: that clone ran another profile (or the "
                          "profile changed since): run `make profile PROFILE=...` again")
    params = load_params(params_file)
    report_dir = params.report.dir
    commit = _git(clone, "rev-parse", "HEAD").strip()
    changed = [ln[3:] for ln in _git(clone, "status", "--porcelain", "--untracked-files=no").splitlines()]
    foreign = [f for f in changed if f not in WRITTEN_BY_PROFILE and not f.startswith(report_dir.rstrip("/") + "/")]
    if foreign:
        raise ArtifactError(f"{clone} runs code that differs from its commit {commit[:12]} "
                            f"({', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}): its reports cannot be "
                            "attributed to a commit")
    inside = subprocess.run(["git", "-C", str(here), "merge-base", "--is-ancestor", commit, "HEAD"],
                            capture_output=True, text=True)
    if inside.returncode != 0:
        raise ArtifactError(f"{clone}'s commit {commit[:12]} is not in this repository's history: commit the "
                            "code it ran here first (a result is cited by the commit that made it)")
    if not (clone / "dvc.lock").is_file():
        raise ArtifactError(f"{clone} has no dvc.lock: its pipeline never ran")
    todo = pending(clone)
    if todo:
        raise ArtifactError(f"the run in {clone} is not finished: `dvc status` there lists {len(todo)} "
                            f"stage(s) to run ({', '.join(todo[:4])}{' ...' if len(todo) > 4 else ''}); run "
                            "`make profile` again (finished stages come from the cache)")
    src = clone / report_dir
    if not src.is_dir() or not any(src.iterdir()):
        raise ArtifactError(f"{src} is missing or empty although the pipeline is current")
    return {"report_dir": report_dir, "commit": commit, "params_sha256": _sha256(params_file),
            "dvc_lock_sha256": _sha256(clone / "dvc.lock"),
            "profile": None if profile is None else Path(profile).as_posix()}


def copy_report_dir(src: Path, dest: Path, *, provenance: dict, lock: Path) -> int:
    """Replace `dest` by a copy of `src` (without SKIP files) plus provenance.json and pipeline.lock, atomically:
    built beside `dest`, then renamed into place. Returns the number of files copied from `src`."""
    src, dest = Path(src), Path(dest)
    tmp = dest.parent / f".{dest.name}.adopt.tmp"
    old = dest.parent / f".{dest.name}.adopt.old"
    for p in (tmp, old):
        shutil.rmtree(p, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copytree(src, tmp, ignore=lambda d, names: [n for n in names if fnmatch.fnmatch(n, SKIP)])
        shutil.copyfile(lock, tmp / "pipeline.lock")
        (tmp / "provenance.json").write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")
        if dest.exists():
            dest.rename(old)
        tmp.rename(dest)
    except BaseException:
        if old.exists() and not dest.exists():
            old.rename(dest)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return sum(1 for p in dest.rglob("*") if p.is_file()) - 2


def adopt(clone: str | Path, *, profile: Optional[str | Path] = None, here: Path = Path("."),
          pending: Callable[[Path], list[str]] = dvc_pending) -> dict:
    """Check the clone, copy its report folder into `here`, re-copy the documents' tables. Returns the provenance."""
    here = Path(here)
    if not (here / "dvc.yaml").is_file():
        raise ConfigError("run it in the workspace's root (the folder with dvc.yaml)")
    prov = check_clone(Path(clone), profile=None if profile is None else Path(profile), here=here, pending=pending)
    n = copy_report_dir(Path(clone) / prov["report_dir"], here / prov["report_dir"], provenance=prov,
                        lock=Path(clone) / "dvc.lock")
    print(f"adopt: {prov['report_dir']}/ <- {clone} (commit {prov['commit'][:12]}, {n} files; provenance.json, "
          "pipeline.lock)")
    return prov


def run(clone: str, profile: Optional[str] = None) -> int:
    """`easycore adopt DIR [--profile FILE]`: adopt, then `easycore tables`."""
    adopt(clone, profile=profile)
    return tables_run()


__all__ = ["adopt", "check_clone", "copy_report_dir", "dvc_pending", "run"]
