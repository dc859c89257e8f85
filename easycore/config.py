"""One typed schema for params.yaml. Every stage reads its params through `load_params`.

Each field carries its constraint declaratively (`param(default, within="(0, 1]")`, `choices=...`, `each=True`); one
generic checker (`check`) walks the schema, so a rule is written once, next to its field. Unknown keys, wrong types
and impossible values are rejected with one line naming the key, the value and what is allowed (`ConfigError`):
    params: <key> = <value> is not allowed; <what is allowed>
Choices of methods, modes, models and datasets come from their registries (`registry.choices`), imported only when
params are checked: importing this module does not import torch.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import yaml

from easycore.registry import choices

DATA_ENV = "EASYCORE_DATA"
NORMS = (1.0, 2.0, math.inf)


class ConfigError(ValueError):
    """A params value is not allowed. The message is one line: key, value, what is allowed."""


def fail(key: str, value: Any, allowed: str) -> typing.NoReturn:
    raise ConfigError(f"params: {key} = {value!r} is not allowed; {allowed}")


# ----------------------------------------------------------------------------- declarative constraints
@dataclass(frozen=True)
class Rule:
    within: Optional[str] = None            # an interval such as "(0, 1]" or "[1, inf)"; inf bounds exclude inf
    choices: Any = None                     # a sequence, or a callable returning one (a registry's names)
    each: bool = False                      # a list: the rule applies to every element
    nonempty: bool = False                  # a list must have at least one element
    unique: bool = False                    # a list must not repeat an element
    increasing: bool = False                # a list must be sorted ascending
    pattern: Optional[str] = None           # a string must match this regex (shell-safe names)
    what: str = ""                          # overrides the generated "what is allowed" text


def param(default: Any = dataclasses.MISSING, *, factory: Optional[Callable[[], Any]] = None, **rule: Any):
    """A dataclass field with its constraint (see `Rule`)."""
    meta = {"rule": Rule(**rule)}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


_INTERVAL = re.compile(r"^\s*([\[(])\s*(-?[\w.]+)\s*,\s*(-?[\w.]+)\s*([\])])\s*$")


def _in_interval(v: float, spec: str) -> bool:
    lb, lo, hi, rb = _INTERVAL.match(spec).groups()
    lo, hi = float(lo), float(hi)
    if math.isnan(v) or math.isinf(v):  # "[0, inf)" means finite and >= 0
        return False
    return (v >= lo if lb == "[" else v > lo) and (v <= hi if rb == "]" else v < hi)


def _allowed(r: Rule) -> str:
    if r.what:
        return r.what
    if r.choices is not None:
        ch = r.choices() if callable(r.choices) else r.choices
        return f"choose {'each from' if r.each else 'one of'} {list(ch)}"
    if r.within:
        lb, lo, hi, rb = _INTERVAL.match(r.within).groups()
        if hi == "inf":
            return f"must be a finite number {'>=' if lb == '[' else '>'} {lo}"
        return f"must be in {r.within}"
    if r.pattern:
        return f"must match {r.pattern} (letters, digits, '_', '.')"
    return "see the comment in params.yaml"


def _ok(v: Any, r: Rule) -> bool:
    if v is None:
        return True
    if r.choices is not None and v not in (r.choices() if callable(r.choices) else r.choices):
        return False
    if r.within is not None and not _in_interval(float(v), r.within):
        return False
    return r.pattern is None or re.fullmatch(r.pattern, str(v)) is not None


def check(obj: Any, prefix: str = "") -> Any:
    """Check every field of the dataclass `obj` (recursively) against its Rule; then its `extra_check`."""
    for f in dataclasses.fields(obj):
        key = f"{prefix}.{f.name}" if prefix else f.name
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            check(v, key)
            continue
        r: Optional[Rule] = f.metadata.get("rule")
        if r is None:
            continue
        if isinstance(v, list):
            if r.nonempty and not v:
                fail(key, v, "must be a non-empty list")
            if r.unique and len(set(map(repr, v))) != len(v):
                fail(key, v, "must not repeat an entry (each entry names its own runs)")
            if r.increasing and sorted(v) != list(v):
                fail(key, v, "must be increasing")
            if r.each and not all(_ok(x, r) for x in v):
                fail(key, v, _allowed(r))
        elif not _ok(v, r):
            fail(key, v, _allowed(r))
    extra = getattr(obj, "extra_check", None)
    if extra is not None:
        extra(prefix)
    return obj


NAME = r"[A-Za-z0-9_.]+"   # names that reach shell commands through dvc.yaml: nothing a shell interprets
SAFE_NAME = r"[A-Za-z0-9_-][A-Za-z0-9_.-]*"   # names that become (part of) a file or folder name: no '/', no '..'


# ----------------------------------------------------------------------------- sections
@dataclass
class DataConfig:
    dataset: str = param("cifar10", choices=choices("datasets"))
    # where the data lies; the env var EASYCORE_DATA overrides it. Relative paths are from the cwd.
    root: str = "../shared/data"
    download: bool = False           # let torchvision download the official files (needs internet)
    n_per_class: Optional[int] = param(200, within="[1, inf)", what="must be >= 1 or null (all samples)")
    test_n_per_class: Optional[int] = param(100, within="[1, inf)", what="must be >= 1 or null (all samples)")
    seed: int = param(0, within="[0, inf)")  # seeds the subset draw
    # how batches reach the model: device = the whole uint8 set resident on the device (CIFAR/MNIST size);
    # streaming = DataLoader workers decoding files (ImageNet); auto = device when it fits (streaming.choose_loader)
    loader: str = param("auto", choices=("auto", "device", "streaming"))
    workers: int = param(4, within="[0, inf)")          # DataLoader workers of the streaming loader
    image_size: Optional[int] = param(None, within="[8, inf)", what="null (the dataset's size; ImageNet 224) or >= 8")

    def resolved_root(self) -> Path:
        return Path(os.environ.get(DATA_ENV) or self.root).expanduser()


@dataclass
class RuntimeConfig:
    """How every stage runs (proxy, train, evaluate): device and the CUDA speed switches."""
    device: str = param("auto", choices=("auto", "cpu", "cuda"))
    amp: bool = True                 # bf16 autocast on CUDA (ignored on CPU)
    cpu_bf16: bool = False           # bf16 autocast on the CPU too (native bf16 CPUs: avx512_bf16 / amx): faster
    #                                  (reports/benchmarks.md, cpu_speed), other numbers than fp32: off by default
    channels_last: bool = True       # NHWC memory format (faster on CUDA, and on CPU for the demo nets)
    compile: bool = False            # torch.compile the model (CUDA only)
    deterministic: bool = False      # torch.use_deterministic_algorithms on CUDA (slower)
    sync_bn: bool = False            # several processes (torchrun): BatchNorm statistics over the global batch (syncbn.py)
    concurrent: int = param(0, within="[0, 64]")  # runs of a group trained at once (worker processes on one
    #                                  device): 0 = auto (1 on CPU; on CUDA from free memory and the first run's peak)


@dataclass
class OptimConfig:
    lr: float = param(0.1, within="(0, inf)")
    momentum: float = param(0.9, within="[0, 1)")
    nesterov: bool = True
    weight_decay: float = param(5e-4, within="[0, inf)")
    schedule: str = param("onecycle", choices=("multistep", "cosine", "onecycle", "constant"))
    milestones: list[float] = param(factory=lambda: [0.5, 0.75], each=True, within="(0, 1)", increasing=True,
                                what="must be increasing fractions of the epochs in (0, 1)")  # multistep
    gamma: float = param(0.1, within="(0, 1]")      # multistep decay factor
    warmup: float = param(0.15, within="[0, 1)")    # onecycle: fraction of steps rising to the peak lr

    def extra_check(self, k: str) -> None:
        if self.nesterov and self.momentum == 0:
            fail(f"{k}.nesterov", self.nesterov, "nesterov needs momentum > 0")


@dataclass
class AttackConfig:
    """Training-time attack (pgd_at, trades, fgsm_rs). Linf; eps and alpha in [0,1] pixel units."""
    eps: float = param(8 / 255, within="[0, 1]", what="must be in [0, 1] (pixel units, e.g. 0.0314 for 8/255)")
    alpha: float = param(2 / 255, within="(0, inf)")
    steps: int = param(10, within="[1, inf)")
    beta: float = param(6.0, within="[0, inf)")      # TRADES trade-off


@dataclass
class TrainConfig:
    model: str = param("cnn_small", choices=choices("models"))
    epochs: int = param(10, within="[1, inf)")
    batch_size: int = param(128, within="[1, inf)")
    augment: bool = True             # random crop (pad 4) + horizontal flip, on the device
    optim: OptimConfig = field(default_factory=OptimConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    modes: list[str] = param(factory=lambda: ["standard", "trades"], choices=choices("modes"), each=True,
                         nonempty=True, unique=True)
    # Each seed is one whole-pipeline replicate: proxy (proxy.seed + s) -> scores -> selection (coreset.seed + s,
    # random redrawn) -> training (seed s). Retraining one selection with new seeds would replicate nothing.
    seeds: list[int] = param(factory=lambda: [0], each=True, within="[0, inf)", nonempty=True, unique=True)
    # replicates of the secondary groups (survey, adaptive, full-data reference, transfer): the first n of seeds;
    # 0 = all. The primary comparison (coreset.methods x fractions x modes) always runs every seed.
    survey_seeds: int = param(0, within="[0, inf)")
    eval_every: int = param(0, within="[0, inf)")  # >0: clean accuracy on the test subset every k epochs (logged)
    # the full-data reference (method full, fraction 1.0): its epochs (0 = epochs: a whole-set run may need fewer
    # than a coreset run of the same model) and its replicates (the first full_seeds of seeds; 0 = survey_seeds)
    full_epochs: int = param(0, within="[0, inf)")
    full_seeds: int = param(0, within="[0, inf)")

    def extra_check(self, k: str) -> None:
        if self.survey_seeds > len(self.seeds):
            fail(f"{k}.survey_seeds", self.survey_seeds, f"at most the {len(self.seeds)} seeds of {k}.seeds (0 = all)")
        if self.full_seeds > len(self.seeds):
            fail(f"{k}.full_seeds", self.full_seeds, f"at most the {len(self.seeds)} seeds of {k}.seeds (0 = survey_seeds)")

    def secondary_seeds(self) -> list[int]:
        """The seeds of the secondary groups: the first survey_seeds of seeds (all when 0)."""
        return list(self.seeds[:self.survey_seeds or len(self.seeds)])

    def full_data_seeds(self) -> list[int]:
        """The replicates of the full-data reference: the first full_seeds of seeds (the secondary seeds when 0)."""
        return list(self.seeds[:self.full_seeds]) if self.full_seeds else self.secondary_seeds()


@dataclass
class AIGNConfig:
    mode: str = param("exact", choices=("exact", "inline", "both", "off"))
    # exact: eval-mode pass over the un-augmented set after each tracked epoch; inline: reuse the training
    # step's input gradient; both; off. All three norms (L1, L2, Linf) are stored; coreset.p picks one.
    every: int = param(1, within="[1, inf)")          # track every k-th epoch (and always the last)
    batch_size: int = param(128, within="[1, inf)")   # exact pass (on CPU, 128 measured 2x faster than 512)


@dataclass
class ProxyConfig:
    """The full-data runs that record AIGN and the training dynamics every static coreset method needs: the `main`
    run (architecture `model`) scores every static method; each of `transfer_models` is a second run, named by its
    architecture, whose scores choose `coreset.transfer_methods` (the model-agnostic claim); [] = none."""
    model: str = param("cnn_small", choices=choices("models"))
    transfer_models: list[str] = param(factory=lambda: ["resnet_tiny"], choices=choices("models"), each=True,
                                       unique=True)
    epochs: int = param(10, within="[1, inf)")
    batch_size: int = param(128, within="[1, inf)")
    augment: bool = True
    seed: int = param(0, within="[0, inf)")
    optim: OptimConfig = field(default_factory=OptimConfig)
    aign: AIGNConfig = field(default_factory=AIGNConfig)
    deepfool_steps: int = param(50, within="[1, inf)")  # DeepFool iterations (boundary distance at the final model)
    deepfool_candidates: int = param(0, within="[0, inf)", what="0 (all classes) or >= 2")  # top-k classes; 0 = all

    def extra_check(self, k: str) -> None:
        if self.deepfool_candidates == 1:
            fail(f"{k}.deepfool_candidates", 1, "0 (all classes) or >= 2")

    def model_of(self, name: str) -> str:
        """The architecture of proxy run `name` ('main' or one of transfer_models)."""
        if name == "main":
            return self.model
        if name in self.transfer_models:
            return name
        raise ConfigError(f"params: proxy run {name!r} is not declared; use main or one of proxy.transfer_models "
                          f"{self.transfer_models}")

    def as_train(self, model: Optional[str] = None) -> TrainConfig:
        return TrainConfig(model=model or self.model, epochs=self.epochs, batch_size=self.batch_size,
                           augment=self.augment, optim=self.optim, modes=["standard"], seeds=[self.seed])


@dataclass
class ACSConfig:
    """Adaptive coresets (ACS, Dolatabadi et al. 2022): re-selected every `every` epochs from the current model."""
    every: int = param(20, within="[1, inf)")          # R: epochs between selections
    kappa: float = param(0.5, within="[0, 1]")         # warm start: T_w = round(f * int(kappa * E)) full-data epochs
    lam: float = param(0.5, within="[0, inf)")         # GradMatch ridge term
    per_batch: bool = True                          # select mini-batches (CRAIGPB / GradMatchPB), the fast default
    batch_size: int = param(0, within="[0, inf)")       # per-batch variant's mini-batch size; 0 = train.batch_size


@dataclass
class CoresetConfig:
    # static methods, selected once from the main proxy's scores (`easycore methods`)
    methods: list[str] = param(factory=lambda: ["random", "easycore", "hard", "el2n", "forgetting", "grand", "moderate"],
                           choices=choices("methods", kind="static"), each=True, nonempty=True, unique=True)
    # adaptive methods, re-selected during training (ACS); need no proxy
    adaptive: list[str] = param(factory=list, choices=choices("methods", kind="adaptive"), each=True, unique=True)
    # ... trained in these modes of train.modes (ACS is an adversarial-training method)
    adaptive_modes: list[str] = param(factory=lambda: ["trades"], choices=choices("modes"), each=True, unique=True,
                                      nonempty=True)
    # ... at these fractions of coreset.fractions (null = all of them)
    adaptive_fractions: Optional[list[float]] = param(None, each=True, within="(0, 1)", unique=True,
                                                      what="null (every coreset fraction) or fractions of coreset.fractions")
    # a survey: more static methods, trained only at survey_fractions (every method at least at one fraction
    # without the cost of the full methods x fractions product)
    survey_methods: list[str] = param(factory=list, choices=choices("methods", kind="static"), each=True, unique=True)
    survey_fractions: list[float] = param(factory=list, each=True, within="(0, 1)", unique=True,
                                          what="each fraction must be in (0, 1)")
    # ... trained in these modes of train.modes (a survey under TRADES only halves its cost)
    survey_modes: list[str] = param(factory=lambda: ["standard", "trades"], choices=choices("modes"), each=True,
                                    unique=True, nonempty=True)
    # static methods also selected with the scores of every non-main proxy run (trained in standard mode)
    transfer_methods: list[str] = param(factory=lambda: ["easycore"], choices=choices("methods", kind="static"),
                                    each=True, unique=True)
    fractions: list[float] = param(factory=lambda: [0.3], each=True, within="(0, 1)", nonempty=True, unique=True,
                               what="each fraction must be in (0, 1) (the full-data reference is its own run)")
    balanced: bool = False           # per-class quotas instead of one global sort
    seed: int = param(0, within="[0, inf)")
    window: str = param("all", pattern=r"all|(first|last):[1-9][0-9]*", what="all | first:K | last:K with K >= 1")
    p: float = param(2.0, choices=NORMS, what="choose 1, 2 or inf")  # AIGN norm
    squared: bool = False            # square the per-epoch norm before averaging
    score_epochs: int = param(3, within="[1, inf)")  # EL2N averaged over the first K epochs; GraNd at epoch K
    ccs_score: str = param("aign", choices=choices("scores"))  # CCS stratifies on it
    ccs_cutoff: float = param(0.1, within="[0, 1)")  # CCS drops this fraction of the hardest samples first
    moderate_band: float = param(0.0, within="[0, 1)")  # 0: the k closest to the median distance; b: a band
    acs: ACSConfig = field(default_factory=ACSConfig)

    def extra_check(self, k: str) -> None:
        both = sorted(set(self.methods) & set(self.survey_methods))
        if both and set(self.fractions) & set(self.survey_fractions):
            fail(f"{k}.survey_methods", both, "already in coreset.methods at a survey fraction (each run is declared once)")
        if self.adaptive_fractions is not None and not set(self.adaptive_fractions) <= set(self.fractions):
            fail(f"{k}.adaptive_fractions", self.adaptive_fractions, f"each must be one of {k}.fractions {self.fractions}")
        if self.survey_methods and not self.survey_fractions:
            fail(f"{k}.survey_fractions", self.survey_fractions, "give the fractions the survey methods train at")


@dataclass
class EvalConfig:
    n_test: int = param(500, within="[1, inf)")  # test images attacked (the first n of the test subset)
    batch_size: int = param(256, within="[1, inf)")
    eps: float = param(8 / 255, within="[0, 1]")        # the headline Linf budget
    alpha: float = param(2 / 255, within="(0, inf)")    # PGD step at eps (other eps: the same alpha / eps ratio)
    pgd_steps: int = param(20, within="[1, inf)")
    restarts: int = param(1, within="[1, inf)")        # random restarts of pgd / pgd_cw / apgd (worst restart kept)
    # every image, at eps: their own accuracies are reported and they enter the worst case
    attacks: list[str] = param(factory=lambda: ["fgsm", "pgd"], choices=choices("attacks"), each=True, unique=True)
    survivors_only: bool = False     # each attack runs only on the images still correct (cumulative: cheaper)
    # on the images still robust after `attacks`, at eps: they only enter the worst case
    strong: list[str] = param(factory=list, choices=choices("attacks"), each=True, unique=True)
    strong_steps: int = param(50, within="[1, inf)")   # steps of the strong attacks
    # PGD robustness curve: every eps here (and eval.eps); monotone worst case over the grid
    eps_grid: list[float] = param(factory=lambda: [0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255], each=True,
                                  within="[0, 1]", increasing=True, unique=True)
    grid_steps: int = param(0, within="[0, inf)")      # PGD steps at grid points other than eps; 0 = pgd_steps
    l2_eps: float = param(0.0, within="[0, inf)")       # >0: L2 PGD-20 with this budget (0.5 is standard)
    # the headline eps per training mode ({trades: 0.0314, standard: 0.0078}): a model of that mode is attacked at
    # it instead of eps (eval.attacks and eval.strong; alpha keeps its ratio to eps), and it is the mode's primary
    # eps (report.primary); {} = eps for every mode
    mode_eps: dict[str, float] = param(factory=dict)
    # test images of the primary family's groups (report.primary's pair at its fractions, every replicate); 0 =
    # n_test. The other groups take the first n_test of the same class-interleaved order (a subset of these)
    primary_n_test: int = param(0, within="[0, inf)")
    # standard AutoAttack (torchattacks) at eps on autoattack_n test images (spread over the classes) still robust,
    # for the models the verdict compares (full data, EasyCore, random, the best other method) of these modes (the
    # autoattack stage)
    autoattack_modes: list[str] = param(factory=list, choices=choices("modes"), each=True, unique=True)
    autoattack_n: int = param(100, within="[1, inf)")
    sanity: bool = True              # gradient-masking sanity checks, on sanity_n images spread over the classes
    sanity_n: int = param(200, within="[1, inf)")

    def extra_check(self, k: str) -> None:
        for mode, e in self.mode_eps.items():
            if not 0 < e <= 1:
                fail(f"{k}.mode_eps.{mode}", e, "an eps in (0, 1] (pixel units, e.g. 0.0314 for 8/255)")

    def for_mode(self, mode: str) -> "EvalConfig":
        """This config for the models of training mode `mode`: eps = mode_eps[mode] where given (alpha scaled with
        it, so the step keeps its ratio to eps)."""
        e = self.mode_eps.get(mode)
        if e is None or e == self.eps:
            return self
        return dataclasses.replace(self, eps=e, alpha=self.alpha * e / self.eps if self.eps else e / 4)

    def n_for(self, primary: bool) -> int:
        """Test images of a group: primary_n_test for the primary family's groups (when set), else n_test."""
        return self.primary_n_test if primary and self.primary_n_test else self.n_test


@dataclass
class PrimaryConfig:
    """The pre-registered primary family, written before the run: `method` vs `comparator` for every (mode of
    train.modes, fraction of coreset.fractions) at one headline eps per mode; Holm over that family alone, everything
    else is secondary (easycore/report.py)."""
    method: str = param("easycore", choices=choices("methods", kind="static"))
    comparator: str = param("random", choices=choices("methods", kind="static"))
    # null: per mode, eval.mode_eps[mode] where given, else the largest eps > 0 of eval.eps_grid at which the
    # full-data model keeps >= min_full_robust robust accuracy (mean over its replicates: every replicate must be
    # there, or the cells say which is missing); a number: that eps for every mode
    eps: Optional[float] = param(None, within="(0, 1]", what="null (the rule) or an eps in (0, 1]")
    # the family's fractions (null = every fraction of coreset.fractions): they run every replicate of train.seeds;
    # the pair at the other fractions runs the secondary seeds (train.survey_seeds) and is secondary
    fractions: Optional[list[float]] = param(None, each=True, within="(0, 1)", unique=True,
                                             what="null (every coreset fraction) or fractions of coreset.fractions")
    min_full_robust: float = param(0.2, within="(0, 1)")
    level: float = param(0.95, within="(0, 1)")      # confidence of the family's intervals
    power: float = param(0.8, within="(0, 1)")       # the MDE reported beside each cell: detectable at this power

    def extra_check(self, k: str) -> None:
        if self.method == self.comparator:
            fail(f"{k}.comparator", self.comparator, f"a method other than {k}.method")


@dataclass
class ReportConfig:
    dir: str = param("reports", pattern=r"[A-Za-z0-9_][A-Za-z0-9_./-]*", what="a relative folder (letters, digits, _ . / -)")

    def extra_check(self, k: str) -> None:
        if ".." in Path(self.dir).parts:
            fail(f"{k}.dir", self.dir, "a folder inside the repository (no '..')")
    grid_per_class: int = param(8, within="[1, inf)")   # images per class in easiest/hardest grids
    formats: list[str] = param(factory=lambda: ["png", "svg"], choices=("png", "svg", "pdf"), each=True, nonempty=True)
    primary: PrimaryConfig = field(default_factory=PrimaryConfig)


@dataclass
class Params:
    data: DataConfig = field(default_factory=DataConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    coreset: CoresetConfig = field(default_factory=CoresetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def check(self) -> "Params":
        return check(self)

    def extra_check(self, k: str) -> None:
        pf = self.report.primary.fractions
        if pf is not None and not set(pf) <= set(self.coreset.fractions):
            fail("report.primary.fractions", pf, f"each must be one of coreset.fractions {self.coreset.fractions}")
        if self.eval.mode_eps and not set(self.eval.mode_eps) <= set(self.train.modes):
            fail("eval.mode_eps", sorted(self.eval.mode_eps), f"keys must be modes of train.modes {self.train.modes}")
        for key, modes in (("coreset.adaptive_modes", self.coreset.adaptive_modes if self.coreset.adaptive else []),
                           ("coreset.survey_modes", self.coreset.survey_modes if self.coreset.survey_methods else []),
                           ("eval.autoattack_modes", self.eval.autoattack_modes)):
            if not set(modes) <= set(self.train.modes):
                fail(key, modes, f"each must be one of train.modes {self.train.modes}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def primary_fractions(self) -> list[float]:
        """The fractions of the primary family (report.primary.fractions, or every coreset fraction)."""
        pf = self.report.primary.fractions
        return list(self.coreset.fractions) if pf is None else [f for f in self.coreset.fractions if f in pf]

    def is_primary_group(self, scores: str, method: str, fraction: float) -> bool:
        """A group of the primary family: the primary pair, scored by the main proxy, at a primary fraction."""
        pc = self.report.primary
        return scores == "main" and method in (pc.method, pc.comparator) and fraction in self.primary_fractions()


def fraction_name(f: float) -> str:
    """How a fraction appears in run names: Python's repr of the float, which is also what DVC writes when it
    interpolates `${item.fraction}` (0.3 -> '0.3', 1.0 -> '1.0')."""
    return repr(float(f))


# ----------------------------------------------------------------------------- parsing
def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _coerce(key: str, value: Any, tp) -> Any:
    """Check `value` against the annotation `tp`; return the value (ints accepted for floats)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner[0])
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list):
            fail(key, value, f"must be a list of {_type_name(inner)}")
        return [_coerce(f"{key}[{i}]", v, inner) for i, v in enumerate(value)]
    if origin is dict:
        kt, vt = typing.get_args(tp)
        if not isinstance(value, dict):
            fail(key, value, f"must be a mapping of {_type_name(kt)} to {_type_name(vt)}")
        return {_coerce(key, k, kt): _coerce(f"{key}.{k}", v, vt) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            fail(key, value, "must be true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail(key, value, "must be an integer")
        return value
    if tp is float:
        if isinstance(value, str) and value.strip().lower() in ("inf", ".inf", "+inf", "+.inf"):
            return math.inf
        if isinstance(value, str):  # PyYAML (YAML 1.1) reads 5e-4 / 1e-3 as strings: accept plain numbers
            try:
                value = float(value.strip())
            except ValueError:
                fail(key, value, "must be a number")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail(key, value, "must be a number")
        if math.isnan(value):
            fail(key, value, "must be a number, not NaN")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            fail(key, value, "must be a string")
        return value
    raise TypeError(f"unsupported annotation {tp} for {key}")


def _from_dict(cls, data: Any, prefix: str):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        fail(prefix or "params", data, "must be a mapping of keys to values")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in data:
        if k not in names:
            where = f"{prefix}.{k}" if prefix else k
            raise ConfigError(f"params: unknown key {where!r}; allowed keys here: {sorted(names)}")
    kwargs = {k: _coerce(f"{prefix}.{k}" if prefix else k, v, hints[k]) for k, v in data.items()}
    return cls(**kwargs)


def params_from_dict(data: dict) -> Params:
    return _from_dict(Params, data, "").check()


_DECIMAL_INT = re.compile(r"[-+]?(0|[1-9][0-9]*)")


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader (YAML 1.1), refusing the integers YAML 1.2 (DVC's ruamel, which renders ${...} in
    dvc.yaml) reads otherwise: 010 is 8 here but 10 there, 1_000 and 1:30 are numbers here but strings there, so
    easycore and DVC would name different runs. Only plain decimal integers are accepted."""


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node)
    if not _DECIMAL_INT.fullmatch(text.strip()):
        raise ConfigError(f"params: {node.start_mark.name}, line {node.start_mark.line + 1}: the integer {text!r} is "
                          f"read differently by YAML 1.1 (easycore) and YAML 1.2 (DVC); write it in plain decimal")
    return int(text)


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def _yaml(text: str, name: str = "an override"):
    loader = _Loader(text)
    loader.name = name          # named in the marks (error messages)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_params(path: str | os.PathLike = "params.yaml", overrides: Optional[Sequence[str]] = None) -> Params:
    """Read, override (`key.sub=value`, YAML-parsed) and validate params. Raises ConfigError."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"params: file {path} not found")
    try:
        data = _yaml(_read_text(path), str(path)) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"params: {path} is not valid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        fail("params", data, f"{path} must hold a mapping of sections ({', '.join(f.name for f in dataclasses.fields(Params))})")
    for ov in overrides or []:
        key, eq, raw = ov.partition("=")
        if not eq:
            raise ConfigError(f"params: override {ov!r} must look like key.sub=value")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if node.get(part) is None:  # a missing or empty section (`train:` alone reads as null)
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise ConfigError(f"params: override {ov!r}: {part} is not a section")
        try:
            node[parts[-1]] = _yaml(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"params: override {ov!r}: value is not valid YAML: {str(e).splitlines()[0]}") from None
    params = params_from_dict(data)
    _check_raw_fractions(data)
    return params


def _read_text(path: Path) -> str:
    """The params file's text; a folder, an unreadable or a binary (not UTF-8) file is a ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except IsADirectoryError:
        raise ConfigError(f"params: {path} is a folder, not a params file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"params: {path} is not a text (UTF-8) file") from None
    except OSError as e:
        raise ConfigError(f"params: cannot read {path} ({e.strerror or type(e).__name__})") from None
    if "\x00" in text:
        raise ConfigError(f"params: {path} is not a text file (it holds NUL bytes)")
    return text


def _check_raw_fractions(data: dict) -> None:
    """Fractions name run folders through DVC's `${item.fraction}` (str of the YAML value) and through
    `fraction_name` (repr of the float): they must agree, so `1` or `3e-1` are refused before anything runs."""
    fr = (data.get("coreset") or {}).get("fractions") if isinstance(data.get("coreset"), dict) else None
    if isinstance(fr, list):
        for v in fr:
            if not isinstance(v, bool) and isinstance(v, (int, float, str)) and str(v) != repr(float(v)):
                fail("coreset.fractions", v, "write each fraction as a plain decimal such as 0.3 "
                                              "(it names the run folders)")
