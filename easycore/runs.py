"""Run names and paths: the one place that builds and parses them.

    runs/proxy/<proxy>/                                     a proxy run: main, or a transfer model's name
    runs/coresets/<scores>/<method>-<fraction>/             a static selection made with proxy <scores>' records
    runs/train/<scores>/<method>-<fraction>-<mode>-s<seed>/ a training run
    runs/eval/<scores>/<method>-<fraction>-<mode>-s<seed>/  its evaluation
`scores` is the proxy run whose records chose the coreset, or `none` for runs that need no proxy: the full-data
reference (method `full`, fraction 1.0) and the adaptive methods (ACS). Fractions are written by
`config.fraction_name` (repr of the float), which is what DVC writes for `${item.fraction}`: dvc.yaml's path
templates and these functions agree (tests/test_architecture.py renders dvc.yaml and compares).
A run's resume checkpoint lies beside its folder as `.<name>.state.pt` (outside DVC's outs, so an interrupted
`dvc repro` resumes it).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .config import Params, fraction_name

ROOT = Path("runs")
NONE = "none"          # the `scores` of runs chosen without a proxy
FULL = "full"          # the full-data reference method
_NAME = re.compile(r"^(?P<method>[A-Za-z0-9_]+)-(?P<fraction>[0-9.]+(?:e-?[0-9]+)?)-(?P<mode>[A-Za-z0-9_]+)"
                   r"-s(?P<seed>[0-9]+)$")


@dataclass(frozen=True, order=True)
class Run:
    scores: str
    method: str
    fraction: float
    mode: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.method}-{fraction_name(self.fraction)}-{self.mode}-s{self.seed}"

    @property
    def key(self) -> str:
        """'<scores>/<name>': unique over a pipeline."""
        return f"{self.scores}/{self.name}"

    def train_dir(self, root: Path = ROOT) -> Path:
        return Path(root) / "train" / self.scores / self.name

    def eval_dir(self, root: Path = ROOT) -> Path:
        return Path(root) / "eval" / self.scores / self.name

    def selection_dir(self, root: Path = ROOT) -> Optional[Path]:
        """The static selection this run trains on (None for the full-data and adaptive runs)."""
        return None if self.scores == NONE else selection_dir(self.scores, self.method, self.fraction, root)


def proxy_dir(name: str, root: Path = ROOT) -> Path:
    return Path(root) / "proxy" / name


def selection_dir(scores: str, method: str, fraction: float, root: Path = ROOT) -> Path:
    return Path(root) / "coresets" / scores / f"{method}-{fraction_name(fraction)}"


def state_path_for(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    return out_dir.parent / f".{out_dir.name}.state.pt"


def parse(key: str) -> Run:
    """'<scores>/<method>-<fraction>-<mode>-s<seed>' (or a path ending in it) -> Run; ValueError otherwise."""
    parts = Path(key).parts
    m = _NAME.match(parts[-1]) if len(parts) >= 2 else None
    if m is None:
        raise ValueError(f"{key!r} is not a run key <scores>/<method>-<fraction>-<mode>-s<seed>")
    return Run(parts[-2], m["method"], float(m["fraction"]), m["mode"], int(m["seed"]))


def expected_runs(params: Params) -> list[Run]:
    """Every training run the DVC pipeline makes for `params`, in dvc.yaml's order: the static methods scored by
    the main proxy (methods x fractions, then survey_methods x survey_fractions in coreset.survey_modes), the
    adaptive methods (in coreset.adaptive_modes), the full-data reference, then the transfer runs (static methods
    scored by every other proxy, standard mode)."""
    c, t = params.coreset, params.train
    runs = [Run("main", m, f, mode, s) for m in c.methods for f in c.fractions for mode in t.modes for s in t.seeds]
    runs += [Run("main", m, f, mode, s) for m in c.survey_methods for f in c.survey_fractions for mode in c.survey_modes
             for s in t.seeds]
    runs += [Run(NONE, m, f, mode, s) for m in c.adaptive for f in c.fractions for mode in c.adaptive_modes
             for s in t.seeds]
    runs += [Run(NONE, FULL, 1.0, mode, s) for mode in t.modes for s in t.seeds]
    runs += [Run(p, m, f, "standard", s) for p in params.proxy.transfer_models
             for m in c.transfer_methods for f in c.fractions for s in t.seeds]
    return runs


# ----------------------------------------------------------------------------- the run a DVC stage runs
# dvc.yaml's stage commands interpolate nothing from params (`${item.*}` in a shell command line would run whatever
# a params value holds: `dvc repro -s` skips the `check` stage). A matrix stage's command is `easycore <cmd> --dvc`;
# DVC exports the stage's name to the command as $DVC_STAGE (`<family>@<values joined by '-'>`), and the command
# finds the declared run whose DVC key that is: a key the params do not declare is an error, never a path.
DVC_STAGE = "DVC_STAGE"


def dvc_key(*values) -> str:
    """DVC's name for a matrix member: its values as DVC writes them (str; booleans true/false), joined by '-'."""
    return "-".join(("true" if v else "false") if isinstance(v, bool) else str(v) for v in values)


def stage_key(stage: Optional[str]) -> str:
    """The matrix key of $DVC_STAGE ('train@main-random-0.3-standard-0' -> 'main-random-0.3-standard-0')."""
    from .config import ConfigError

    if not stage:
        raise ConfigError(f"--dvc takes the run from ${DVC_STAGE}, which DVC sets for a stage's command; it is not "
                          f"set: outside DVC, name the run with the other options")
    family, at, key = stage.partition("@")
    if not at or not key:
        raise ConfigError(f"--dvc: ${DVC_STAGE} {stage!r} is not a matrix stage '<family>@<key>'")
    return key


def declared_selections(params: Params) -> list[tuple[str, str, float]]:
    """(scores, method, fraction) of every static selection dvc.yaml's select stages make."""
    c = params.coreset
    out = [("main", m, f) for m in c.methods for f in c.fractions]
    out += [("main", m, f) for m in c.survey_methods for f in c.survey_fractions]
    out += [(p, m, f) for p in params.proxy.transfer_models for m in c.transfer_methods for f in c.fractions]
    return out


def _lookup(stage: Optional[str], declared: dict):
    from .config import ConfigError

    key = stage_key(stage)
    if key not in declared:
        raise ConfigError(f"--dvc: stage {stage!r} is not a run the params declare (a params value changed after "
                          f"`easycore check`? run `dvc repro` without -s)")
    return declared[key]


def proxy_for_stage(params: Params, stage: Optional[str]) -> str:
    """The proxy run of a proxy / proxy_transfer stage: main or a declared transfer model."""
    return _lookup(stage, {n: n for n in ["main", *params.proxy.transfer_models]})


def selection_for_stage(params: Params, stage: Optional[str]) -> tuple[str, str, float]:
    """(scores, method, fraction) of a select stage."""
    return _lookup(stage, {dvc_key(*sel): sel for sel in declared_selections(params)})


def run_for_stage(params: Params, stage: Optional[str]) -> Run:
    """The training run of a train / evaluate stage (matrix scores, method, fraction, mode, seed)."""
    return _lookup(stage, {dvc_key(r.scores, r.method, r.fraction, r.mode, r.seed): r for r in expected_runs(params)})

