"""The locked install: requirements.lock agrees with the hand-edited bounds, and the project's .venv is the lock.

test_installed_packages_equal_the_lock runs only from the project's own .venv (the one `make setup` builds), or
anywhere with EASYCORE_CHECK_LOCK=1 (e.g. a scratch venv made with `pip install -r requirements.lock`).
"""
from __future__ import annotations

import importlib.metadata
import os
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def norm(name: str) -> str:
    """PEP 503 name: lower case, runs of -_. become one '-'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        m = PIN.match(line)
        if m:
            pins[norm(m.group(1))] = m.group(2)
    return pins


def installed() -> dict[str, str]:
    """What `pip freeze` lists for this interpreter (name -> version; the first on sys.path wins)."""
    out: dict[str, str] = {}
    for d in importlib.metadata.distributions():
        name = d.metadata["Name"]
        if name:
            out.setdefault(norm(name), d.version)
    return out


def test_lock_is_complete_hashed_and_inside_the_bounds():
    packaging = pytest.importorskip("packaging.requirements")
    tomllib = pytest.importorskip("tomllib")

    pins = lock_pins()
    assert len(pins) > 100 and "torch" in pins and "safetensors" in pins
    # every pin carries hashes (so pip installs it in hash-checking mode)
    blocks = re.split(r"\n(?=[A-Za-z0-9])", LOCK.read_text())
    unhashed = [b.split()[0] for b in blocks if PIN.match(b) and "--hash=sha256:" not in b]
    assert not unhashed, f"pins without --hash: {unhashed}"

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values() for r in extra]
    txt = [line.split("#")[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    txt = [line for line in txt if line]
    assert project["name"] != "easycore", "'easycore' on PyPI is an unrelated package"
    bad = []
    for source, lines in (("pyproject.toml", reqs), ("requirements.txt", txt)):
        for line in lines:
            r = packaging.Requirement(line)
            got = pins.get(norm(r.name))
            if got is None or not r.specifier.contains(got, prereleases=True):
                bad.append(f"{source}: {line} vs lock {got}")
    assert not bad, "requirements.lock does not satisfy: " + "; ".join(bad)
    # the two hand-edited lists name the same packages
    assert {norm(packaging.Requirement(x).name) for x in reqs} == {norm(packaging.Requirement(x).name) for x in txt}


def _in_project_venv() -> bool:
    return Path(sys.prefix).resolve() == (REPO / ".venv").resolve()


@pytest.mark.skipif(not (_in_project_venv() or os.environ.get("EASYCORE_CHECK_LOCK") == "1"),
                    reason=f"not running from the project's .venv ({REPO / '.venv'}; this is {sys.prefix}): the "
                           f"lock check applies to the environment `make setup` builds (EASYCORE_CHECK_LOCK=1 forces it)")
def test_installed_packages_equal_the_lock():
    from packaging.version import Version

    pins, have = lock_pins(), installed()
    missing = sorted(n for n in pins if n not in have)
    differ = sorted(f"{n} (lock {pins[n]}, installed {have[n]})" for n in pins
                    if n in have and Version(have[n]) != Version(pins[n]))
    assert not missing and not differ, (f"this environment is not requirements.lock: missing {missing}; "
                                        f"different {differ}; run `make setup` or `pip install -r requirements.lock`")
