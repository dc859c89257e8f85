"""Bring a finished profile run's reports into the workspace (`easycore adopt DIR`, `make adopt PROFILE=...`).

`make profile` runs a params profile by plain `dvc repro` in a clone beside the workspace (its PROFILE_DIR). When it
has finished, its report folder (`report.dir` of its params.yaml, e.g. reports/study-v2/) is what the workspace
commits. `adopt` copies it, and only after checking that the copy can be attributed:

- the run is finished: `dvc status` in the clone reports no stage to run (a run cut off half-way, or a params file
  edited after it ran, is refused: its reports are not those of its pipeline);
- the clone runs its commit's code: no tracked file differs from its HEAD except the files `make profile` writes
  (params.yaml, dvc.lock, matrix.yaml) and the pipeline's own outputs (its dvc.lock's `outs`);
- that commit is in the workspace's history (a result is cited by the commit that made it);
- with `--profile FILE`, the clone's params.yaml is that file byte for byte.

What is copied is exactly the run's report outputs: every `outs` path of the clone's dvc.lock under report.dir (the
notebooks, tables, figures, plots, outcomes and summary the report stages write), each replaced whole (a table the
run no longer writes goes with its folder); anything else under that folder stays (the demo's report.dir, reports/,
also holds the studies' folders and benchmarks.md). Everything is copied into a staging folder first, then swapped
into place, and a failure puts back what was swapped; temporary `.*.tmp*` files of an interrupted writer are left
out. `<report.dir>/provenance.json` records the commit, the hashes of the params file and of dvc.lock, and
`<report.dir>/pipeline.lock` is the clone's dvc.lock (with the DVC remote, `dvc pull` of that lock restores every
output the reports were made from). Then the tables README.md and docs/*.md copy from reports/ are re-copied
(`easycore tables`). Any refusal is one error and leaves the workspace as it was.
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
    """The stages `dvc status` would run in `repo` (empty: every stage's outputs are current). A stage listed only as
    "always changed" (`always_changed: true`: data_source, the probe of the data outside the repository) does not
    count: it is listed after every run."""
    from contextlib import chdir

    from dvc.repo import Repo

    with chdir(repo), Repo(".") as r:      # stage names as `dvc status` prints them there
        return sorted(k for k, v in r.status().items() if v != ["always changed"])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_clone(clone: Path, *, profile: Optional[Path] = None, here: Path = Path("."),
                pending: Callable[[Path], list[str]] = dvc_pending) -> tuple[dict, list[str]]:
    """Every check of the module docstring; returns the provenance record and the report outputs to copy
    (`report_outputs`). Raises ConfigError / ArtifactError."""
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
    if not (clone / "dvc.lock").is_file():
        raise ArtifactError(f"{clone} has no dvc.lock: its pipeline never ran")
    changed = [ln[3:] for ln in _git(clone, "status", "--porcelain", "--untracked-files=no").splitlines()]
    outs = _outs(clone / "dvc.lock")
    foreign = [f for f in changed if f not in WRITTEN_BY_PROFILE and not any(f == o or f.startswith(o + "/")
                                                                             for o in outs)]
    if foreign:
        raise ArtifactError(f"{clone} differs from its commit {commit[:12]} in tracked files no stage writes "
                            f"({', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}): its reports cannot be "
                            "attributed to a commit")
    inside = subprocess.run(["git", "-C", str(here), "merge-base", "--is-ancestor", commit, "HEAD"],
                            capture_output=True, text=True)
    if inside.returncode != 0:
        raise ArtifactError(f"{clone}'s commit {commit[:12]} is not in this repository's history: commit the "
                            "code it ran here first (a result is cited by the commit that made it)")
    todo = pending(clone)
    if todo:
        raise ArtifactError(f"the run in {clone} is not finished: `dvc status` there lists {len(todo)} "
                            f"stage(s) to run ({', '.join(todo[:4])}{' ...' if len(todo) > 4 else ''}); run "
                            "`make profile` again (finished stages come from the cache)")
    paths = _under(outs, report_dir)
    if not paths:
        raise ArtifactError(f"{clone}'s dvc.lock has no output under {report_dir}/: nothing to adopt")
    return {"report_dir": report_dir, "commit": commit, "params_sha256": _sha256(params_file),
            "dvc_lock_sha256": _sha256(clone / "dvc.lock"),
            "profile": None if profile is None else Path(profile).as_posix()}, paths


def _outs(lock: Path) -> set[str]:
    """Every `outs` path of a dvc.lock."""
    import yaml

    stages = (yaml.safe_load(Path(lock).read_text()) or {}).get("stages") or {}
    return {o["path"] for rec in stages.values() for o in rec.get("outs", [])}


def report_outputs(lock: Path, report_dir: str) -> list[str]:
    """The outputs the clone's pipeline wrote under `report_dir` (every `outs` path of its dvc.lock inside it): what
    adopt replaces. Anything else under that folder (another study's reports beside the demo's, benchmarks.md) is not
    the run's and stays as it is."""
    return _under(_outs(lock), report_dir)


def _under(outs: set[str], report_dir: str) -> list[str]:
    root = report_dir.rstrip("/")
    return sorted(p for p in outs if p == root or p.startswith(root + "/"))


def copy_outputs(clone: Path, here: Path, paths: list[str], *, report_dir: str, provenance: dict) -> int:
    """Replace each of `paths` (files or folders, relative) in `here` by the clone's copy (without SKIP files), and
    write <report_dir>/provenance.json and <report_dir>/pipeline.lock (the clone's dvc.lock). Everything is copied
    into a staging folder first; then each path is swapped into place, and a failure puts back what was swapped.
    Returns the number of files copied."""
    clone, here = Path(clone), Path(here)
    base = here / report_dir
    stage = base.parent / f".{base.name}.adopt.tmp"
    backup = base.parent / f".{base.name}.adopt.old"
    for p in (stage, backup):
        shutil.rmtree(p, ignore_errors=True)
    skip = lambda d, names: [n for n in names if fnmatch.fnmatch(n, SKIP)]  # noqa: E731
    items = list(paths) + [f"{report_dir}/provenance.json", f"{report_dir}/pipeline.lock"]
    swapped: list[tuple[Path, bool]] = []
    try:
        for rel in paths:
            src, dst = clone / rel, stage / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst, ignore=skip)
            elif src.is_file():
                shutil.copyfile(src, dst)
            else:
                raise ArtifactError(f"{src} is in the clone's dvc.lock but not on disk: run `make profile` again")
        (stage / report_dir).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(clone / "dvc.lock", stage / report_dir / "pipeline.lock")
        (stage / report_dir / "provenance.json").write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")
        n = sum(1 for p in stage.rglob("*") if p.is_file()) - 2
        for rel in items:
            dst, old = here / rel, backup / rel
            had = dst.exists()
            if had:
                old.parent.mkdir(parents=True, exist_ok=True)
                dst.rename(old)
            swapped.append((Path(rel), had))
            dst.parent.mkdir(parents=True, exist_ok=True)
            (stage / rel).rename(dst)
    except BaseException:
        for rel, had in reversed(swapped):       # put back what was swapped, newest first
            dst = here / rel
            if dst.is_dir():
                shutil.rmtree(dst)
            elif dst.exists():
                dst.unlink()
            if had:
                (backup / rel).rename(dst)
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        shutil.rmtree(backup, ignore_errors=True)
    return n


def adopt(clone: str | Path, *, profile: Optional[str | Path] = None, here: Path = Path("."),
          pending: Callable[[Path], list[str]] = dvc_pending) -> dict:
    """Check the clone, copy its report folder into `here`, re-copy the documents' tables. Returns the provenance."""
    clone, here = Path(clone), Path(here)
    if not (here / "dvc.yaml").is_file():
        raise ConfigError("run it in the workspace's root (the folder with dvc.yaml)")
    prov, paths = check_clone(clone, profile=None if profile is None else Path(profile), here=here, pending=pending)
    n = copy_outputs(clone, here, paths, report_dir=prov["report_dir"], provenance=prov)
    print(f"adopt: {len(paths)} outputs under {prov['report_dir']}/ <- {clone} (commit {prov['commit'][:12]}, {n} "
          f"files; with {prov['report_dir']}/provenance.json and pipeline.lock)")
    return prov


def run(clone: str, profile: Optional[str] = None) -> int:
    """`easycore adopt DIR [--profile FILE]`: adopt, then `easycore tables`."""
    adopt(clone, profile=profile)
    return tables_run()


__all__ = ["adopt", "check_clone", "copy_outputs", "dvc_pending", "report_outputs", "run"]
