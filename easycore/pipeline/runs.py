"""Run names and paths: the one place that builds and parses them.

    runs/proxy/<proxy>/s<seed>/                             a proxy run (main, or a transfer model's name)
    runs/coresets/<scores>/<method>-<fraction>/s<seed>/     a static selection made with that proxy's records
    runs/train/<scores>/<method>-<fraction>-<mode>/s<seed>/ a training run, inside its group's folder
    runs/eval/<scores>/<method>-<fraction>-<mode>/s<seed>/  its evaluation
A seed is a whole-pipeline replicate: training seed s trains on the selection of replicate s (coreset.seed + s),
made from the records of replicate s's proxy (proxy.seed + s). Every folder of one seed is one replicate; the
proxy and select stages of a proxy run make every replicate's proxy and selections in one process.
A group is every seed of one (scores, method, fraction, mode): one DVC stage and one process train it (and one
more evaluates it), each run keeping its own folder, resume point and provenance (easycore/pipeline/group.py). A run's key
stays '<scores>/<method>-<fraction>-<mode>-s<seed>' (the name in reports and outcomes.npz).
`scores` is the proxy run whose records chose the coreset, or `none` for runs that need no proxy: the full-data
reference (method `full`, fraction 1.0) and the adaptive methods (ACS). Fractions are written by
`config.fraction_name` (repr of the float), which is what DVC writes for `${item.fraction}`: dvc.yaml's path
templates and these functions agree (tests/test_architecture.py renders dvc.yaml and compares).
A run's resume checkpoint lies beside its group's folder as `.<run name>.state.pt` (outside DVC's outs, so an
interrupted `dvc repro` resumes it; DVC removes a stage's outputs before it runs).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from easycore.config import Params, fraction_name

ROOT = Path("runs")
NONE = "none"          # the `scores` of runs chosen without a proxy
FULL = "full"          # the full-data reference method
_GROUP = re.compile(r"^(?P<method>[A-Za-z0-9_]+)-(?P<fraction>[0-9.]+(?:e-?[0-9]+)?)-(?P<mode>[A-Za-z0-9_]+)$")
_SEED = re.compile(r"^s(?P<seed>[0-9]+)$")
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

    @property
    def group(self) -> "Group":
        return Group(self.scores, self.method, self.fraction, self.mode)

    def train_dir(self, root: Path = ROOT) -> Path:
        return self.group.train_dir(root) / f"s{self.seed}"

    def eval_dir(self, root: Path = ROOT) -> Path:
        return self.group.eval_dir(root) / f"s{self.seed}"

    def state_path(self, root: Path = ROOT) -> Path:
        """The run's resume checkpoint: beside its group's folder (which DVC removes before the stage runs)."""
        return self.group.train_dir(root).parent / f".{self.name}.state.pt"

    def selection_dir(self, root: Path = ROOT) -> Optional[Path]:
        """The static selection this run trains on: its replicate's (None for the full-data and adaptive runs)."""
        return None if self.scores == NONE else selection_dir(self.scores, self.method, self.fraction, self.seed, root)


@dataclass(frozen=True, order=True)
class Group:
    """Every seed of one (scores, method, fraction, mode): the unit a stage trains (or evaluates) in one process."""
    scores: str
    method: str
    fraction: float
    mode: str

    @property
    def name(self) -> str:
        return f"{self.method}-{fraction_name(self.fraction)}-{self.mode}"

    @property
    def key(self) -> str:
        return f"{self.scores}/{self.name}"

    def train_dir(self, root: Path = ROOT) -> Path:
        return Path(root) / "train" / self.scores / self.name

    def eval_dir(self, root: Path = ROOT) -> Path:
        return Path(root) / "eval" / self.scores / self.name

    def runs(self, seeds) -> list[Run]:
        return [Run(self.scores, self.method, self.fraction, self.mode, int(s)) for s in seeds]


def proxy_dir(name: str, seed: int, root: Path = ROOT) -> Path:
    """The proxy run `name` of replicate `seed`."""
    return Path(root) / "proxy" / name / f"s{int(seed)}"


def proxy_state(name: str, seed: int, root: Path = ROOT) -> Path:
    """The resume checkpoint of a proxy replicate: beside the proxy run's folder (which DVC removes before the
    stage runs), so an interrupted stage resumes it."""
    return Path(root) / "proxy" / f".{name}-s{int(seed)}.state.pt"


def selection_dir(scores: str, method: str, fraction: float, seed: int, root: Path = ROOT) -> Path:
    """The selection of replicate `seed` (made from proxy `scores` of that replicate)."""
    return Path(root) / "coresets" / scores / f"{method}-{fraction_name(fraction)}" / f"s{int(seed)}"


def proxy_seeds(params: Params, name: str) -> list[int]:
    """The replicates proxy run `name` is trained for: main every seed of train.seeds (the primary comparison runs
    them all); a transfer proxy the secondary seeds (train.survey_seeds)."""
    return list(params.train.seeds) if name == "main" else params.train.secondary_seeds()


def needs_deepfool(params: Params, name: str, seed: int) -> bool:
    """Whether proxy run `name` of replicate `seed` computes DeepFool distances (the costliest part of a proxy on
    the CPU: ~4 min on 50,000 images): where a selection of that replicate ranks by them (methods whose records
    need `deepfool`, or CCS stratified on them), and for the main proxy of the first replicate, which the report
    notebooks read (hardness vs vulnerability, score correlations)."""
    c = params.coreset
    if name == "main" and int(seed) == int(params.train.seeds[0]):
        return True
    return any(s == int(seed) and (m in DEEPFOOL_METHODS or (m == "ccs" and c.ccs_score == "deepfool"))
               for m, _, s in selections(params, name))


# the static methods whose records need `deepfool` (kept here, not looked up in the method registry, so the proxy
# stage's code closure does not reach easycore.core.coresets; tests/test_coresets.py checks it against the registry)
DEEPFOOL_METHODS = ("deepfool", "deepfool_far")


def stale_states(params: Params, root: Path = ROOT) -> list[Path]:
    """The resume checkpoints of declared runs that no stage will resume: every run of the group (every replicate
    of the proxy run) has its model written, and the run's own model is newer than its checkpoint. That is what a
    stage restored by DVC from its run-cache leaves (DVC runs no command then, so nothing removed the checkpoints an
    earlier, interrupted run of it left). A group killed mid-way (some models missing) keeps them: its next run
    resumes from them."""
    sets = [[(r.state_path(root), r.train_dir(root)) for r in members] for members in expected_groups(params).values()]
    sets += [[(proxy_state(name, s, root), proxy_dir(name, s, root)) for s in proxy_seeds(params, name)]
             for name in ["main", *params.proxy.transfer_models]]
    out = []
    for members in sets:
        models = [d / "model.safetensors" for _, d in members]
        if not all(m.is_file() for m in models):
            continue
        out += [s for (s, _), m in zip(members, models)
                if s.is_file() and s.stat().st_mtime_ns <= m.stat().st_mtime_ns]
    return out


def remove_stale_states(params: Params, root: Path = ROOT) -> list[Path]:
    """Delete `stale_states` with their AIGN record folders (`.<name>.state.records/`); returns what was removed."""
    import shutil

    gone = stale_states(params, root)
    for s in gone:
        s.unlink(missing_ok=True)
        shutil.rmtree(s.with_suffix(".records"), ignore_errors=True)
    return gone


def state_path_for(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    return out_dir.parent / f".{out_dir.name}.state.pt"


def parse(key: str) -> Run:
    """'<scores>/<method>-<fraction>-<mode>-s<seed>', or a run folder '.../<scores>/<method>-<fraction>-<mode>/s<seed>'
    -> Run; ValueError otherwise."""
    parts = Path(key).parts
    if len(parts) >= 3 and (s := _SEED.match(parts[-1])) and (g := _GROUP.match(parts[-2])):
        return Run(parts[-3], g["method"], float(g["fraction"]), g["mode"], int(s["seed"]))
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
    s2 = t.secondary_seeds()   # survey, adaptive, full-data and transfer groups: the first train.survey_seeds
    runs = [Run("main", m, f, mode, s) for m in c.methods for f in c.fractions for mode in t.modes
            for s in fraction_seeds(params, f)]
    runs += [Run("main", m, f, mode, s) for m in c.survey_methods for f in c.survey_fractions for mode in c.survey_modes
             for s in s2]
    runs += [Run(NONE, m, f, mode, s) for m in c.adaptive for f in c.fractions
             if c.adaptive_fractions is None or f in c.adaptive_fractions for mode in c.adaptive_modes for s in s2]
    runs += [Run(NONE, FULL, 1.0, mode, s) for mode in t.modes for s in t.full_data_seeds()]
    runs += [Run(p, m, f, "standard", s) for p in params.proxy.transfer_models
             for m in c.transfer_methods for f in c.fractions for s in s2]
    return runs


def fraction_seeds(params: Params, fraction: float) -> list[int]:
    """The replicates of coreset.methods at `fraction`: every seed at a fraction of the primary family
    (report.primary.fractions; all when null), the secondary seeds at the others."""
    if fraction in params.primary_fractions():
        return list(params.train.seeds)
    return params.train.secondary_seeds()


def expected_groups(params: Params) -> dict[Group, list[Run]]:
    """The training groups of `params` (in dvc.yaml's order) with their runs (one per seed, in train.seeds' order)."""
    out: dict[Group, list[Run]] = {}
    for r in expected_runs(params):
        out.setdefault(r.group, []).append(r)
    return out


def selections(params: Params, scores: str) -> list[tuple[str, float, int]]:
    """The (method, fraction, seed) coresets the select stage of proxy run `scores` makes (dvc.yaml's select
    families), replicate by replicate: main: methods x fractions (every seed), then survey_methods x
    survey_fractions (the secondary seeds); a transfer proxy: transfer_methods x fractions (secondary seeds)."""
    c, t = params.coreset, params.train
    s2 = t.secondary_seeds()
    out = []
    for s in proxy_seeds(params, scores):
        if scores == "main":
            out += [(m, f, s) for m in c.methods for f in c.fractions if s in fraction_seeds(params, f)]
            out += [(m, f, s) for m in c.survey_methods for f in c.survey_fractions if s in s2]
        else:
            out += [(m, f, s) for m in c.transfer_methods for f in c.fractions if s in s2]
    return list(dict.fromkeys(out))


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
    """The matrix key of $DVC_STAGE ('train@main-random-0.3-standard' -> 'main-random-0.3-standard')."""
    from easycore.config import ConfigError

    if not stage:
        raise ConfigError(f"--dvc takes the run from ${DVC_STAGE}, which DVC sets for a stage's command; it is not "
                          f"set: outside DVC, name the run with the other options")
    family, at, key = stage.partition("@")
    if not at or not key:
        raise ConfigError(f"--dvc: ${DVC_STAGE} {stage!r} is not a matrix stage '<family>@<key>'")
    return key


def _lookup(stage: Optional[str], declared: dict, params: Optional[Params] = None):
    from easycore.config import ConfigError

    key = stage_key(stage)
    if key not in declared:
        raise ConfigError(f"--dvc: stage {stage!r} is not a run the params declare (a params value changed after "
                          f"`easycore check`? run `dvc repro` without -s)")
    if params is not None:
        check_matrix(params)
    return declared[key]


def proxy_for_stage(params: Params, stage: Optional[str]) -> str:
    """The proxy run of a proxy / proxy_transfer stage: main or a declared transfer model."""
    return _lookup(stage, {n: n for n in ["main", *params.proxy.transfer_models]}, params)


def scores_for_stage(params: Params, stage: Optional[str]) -> str:
    """The proxy run whose coresets a select / select_transfer stage makes: main or a declared transfer model."""
    return _lookup(stage, {n: n for n in ["main", *params.proxy.transfer_models]}, params)


def group_for_stage(params: Params, stage: Optional[str]) -> Group:
    """The group of a train / evaluate stage (matrix scores, method, fraction, mode)."""
    return _lookup(stage, {dvc_key(g.scores, g.method, g.fraction, g.mode): g for g in expected_groups(params)},
                   params)


# ----------------------------------------------------------------------------- the lists dvc.yaml expands
# DVC removes a stage's declared outputs before its command runs, and the output paths are built from the matrix
# values (`runs/proxy/${item.name}`): a params value such as '../../../victim' would make DVC delete a folder outside
# the repository before any easycore code could refuse it (`dvc repro -s` skips `check`; DVC refuses no path). So
# dvc.yaml's matrices never read params.yaml: they read matrix.yaml (`vars:`), which `easycore check` writes from
# validated params (registered names, fractions in (0, 1); every name matched against SAFE_NAME again here). The
# `check` stage rewrites it and stops when params.yaml declares other runs (run `dvc repro` again: DVC read the old
# list), and every `--dvc` stage command refuses to run when matrix.yaml is not params.yaml's.
MATRIX = Path("matrix.yaml")
MATRIX_KEY = "matrix"
MATRIX_HEADER = ("# Written by `easycore check` from params.yaml (do not edit): the lists dvc.yaml's matrix stages "
                 "expand.\n"
                 "# dvc.yaml builds output paths (which DVC removes before a stage runs) only from these validated "
                 "names.\n# After editing these lists in params.yaml, `dvc repro` rewrites this file, stops, and runs "
                 "them on the next `dvc repro`.\n")


def matrix(params: Params) -> dict:
    """The values dvc.yaml's matrix stages expand, from validated params (the lists expected_runs iterates):
    transfer_models, methods, fractions, modes, survey_*, transfer_methods, adaptive, adaptive_fractions (null in
    params: every coreset fraction), adaptive_modes. Raises ConfigError for a name that is not a plain file name."""
    import math

    from easycore.config import SAFE_NAME, ConfigError

    c, t = params.coreset, params.train
    out = {"transfer_models": params.proxy.transfer_models,
           "methods": c.methods, "fractions": c.fractions, "modes": t.modes,
           "survey_methods": c.survey_methods, "survey_fractions": c.survey_fractions, "survey_modes": c.survey_modes,
           "transfer_methods": c.transfer_methods,
           "adaptive": c.adaptive,
           "adaptive_fractions": [f for f in c.fractions if c.adaptive_fractions is None or f in c.adaptive_fractions],
           "adaptive_modes": c.adaptive_modes}
    for key, values in out.items():
        for v in values:
            ok = (isinstance(v, float) and math.isfinite(v) and 0 < v <= 1) if key.endswith("fractions") else (
                isinstance(v, str) and re.fullmatch(SAFE_NAME, v) is not None)
            if not ok:
                raise ConfigError(f"params: {v!r} ({key}) cannot name a stage's output folder")
    return {k: list(v) for k, v in out.items()}


def matrix_text(params: Params) -> str:
    """matrix.yaml's content for `params` (byte-stable)."""
    import yaml

    return MATRIX_HEADER + yaml.safe_dump({MATRIX_KEY: matrix(params)}, sort_keys=False, default_flow_style=None)


def write_matrix(params: Params, path: Path = MATRIX) -> bool:
    """Write matrix.yaml for `params` when its content differs (atomically); True when it was (re)written."""
    from easycore.store import atomic_path

    text = matrix_text(params)
    path = Path(path)
    if path.exists() and path.read_text() == text:
        return False
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return True


def check_matrix(params: Params, path: Path = MATRIX) -> None:
    """ConfigError unless `path` (the lists DVC expanded into stages) is params' (a `--dvc` stage command's first
    check: `dvc repro -s` skips the `check` stage that rewrites it)."""
    import yaml

    from easycore.config import ConfigError

    try:
        got = (yaml.safe_load(Path(path).read_text()) or {}).get(MATRIX_KEY)
    except (OSError, yaml.YAMLError, AttributeError):
        got = None
    if got != matrix(params):
        raise ConfigError(f"{path} (the runs dvc.yaml expands) is not the one params.yaml declares: run `dvc repro` "
                          f"without -s (its check stage rewrites it), then run the stage")
