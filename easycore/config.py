"""One typed schema for params.yaml. Every stage reads its params through `load_params`.

Unknown keys, wrong types and impossible values are rejected with one line naming the key, the value
and what is allowed (`ConfigError`). Sections mirror the pipeline stages: data, proxy, coreset, train,
eval, report.
"""
from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

DATASETS = ("cifar10", "cifar100", "svhn", "mnist", "fashion_mnist", "synthetic")
MODES = ("standard", "pgd_at", "trades", "fgsm_rs")
SCHEDULES = ("multistep", "cosine", "onecycle", "constant")
AIGN_MODES = ("exact", "inline", "both", "off")
NORMS = (1.0, 2.0, math.inf)
DEVICES = ("auto", "cpu", "cuda")
DATA_ENV = "EASYCORE_DATA"


class ConfigError(ValueError):
    """A params value is not allowed. The message is one line: key, value, what is allowed."""


def fail(key: str, value: Any, allowed: str) -> typing.NoReturn:
    raise ConfigError(f"params: {key} = {value!r} is not allowed; {allowed}")


# ----------------------------------------------------------------------------- sections
@dataclass
class DataConfig:
    dataset: str = "cifar10"
    # where the data lies; the env var EASYCORE_DATA overrides it. Relative paths are from the cwd.
    root: str = "../shared/data"
    download: bool = False           # let torchvision download the official files (needs internet)
    n_per_class: Optional[int] = 200  # class-balanced train subset; null = the full training set
    test_n_per_class: Optional[int] = 100
    seed: int = 0                    # seeds the subset draw

    def check(self, k: str) -> None:
        if self.dataset not in DATASETS:
            fail(f"{k}.dataset", self.dataset, f"choose one of {list(DATASETS)}")
        for name in ("n_per_class", "test_n_per_class"):
            v = getattr(self, name)
            if v is not None and v < 1:
                fail(f"{k}.{name}", v, "must be >= 1 or null (all samples)")
        if self.seed < 0:
            fail(f"{k}.seed", self.seed, "must be >= 0")

    def resolved_root(self) -> Path:
        return Path(os.environ.get(DATA_ENV) or self.root).expanduser()


@dataclass
class OptimConfig:
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "onecycle"
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])  # multistep: fractions of the epochs
    gamma: float = 0.1               # multistep decay factor
    warmup: float = 0.15             # onecycle: fraction of steps rising to the peak lr

    def check(self, k: str) -> None:
        if not 0 < self.lr < math.inf:
            fail(f"{k}.lr", self.lr, "must be a finite number > 0")
        if not 0 <= self.momentum < 1:
            fail(f"{k}.momentum", self.momentum, "must be in [0, 1)")
        if self.nesterov and self.momentum == 0:
            fail(f"{k}.nesterov", self.nesterov, "nesterov needs momentum > 0")
        if not 0 <= self.weight_decay < math.inf:
            fail(f"{k}.weight_decay", self.weight_decay, "must be a finite number >= 0")
        if self.schedule not in SCHEDULES:
            fail(f"{k}.schedule", self.schedule, f"choose one of {list(SCHEDULES)}")
        if any(not 0 < m < 1 for m in self.milestones) or sorted(self.milestones) != list(self.milestones):
            fail(f"{k}.milestones", self.milestones, "must be increasing fractions of the epochs in (0, 1)")
        if not 0 < self.gamma <= 1:
            fail(f"{k}.gamma", self.gamma, "must be in (0, 1]")
        if not 0 <= self.warmup < 1:
            fail(f"{k}.warmup", self.warmup, "must be in [0, 1)")


@dataclass
class AttackConfig:
    """Training-time attack (pgd_at, trades, fgsm_rs). Linf; eps and alpha in [0,1] pixel units."""
    eps: float = 8 / 255
    alpha: float = 2 / 255
    steps: int = 10
    beta: float = 6.0                # TRADES trade-off

    def check(self, k: str) -> None:
        if self.eps < 0 or self.eps > 1:
            fail(f"{k}.eps", self.eps, "must be in [0, 1] (pixel units, e.g. 0.0314 for 8/255)")
        if not 0 < self.alpha < math.inf:
            fail(f"{k}.alpha", self.alpha, "must be a finite number > 0")
        if self.steps < 1:
            fail(f"{k}.steps", self.steps, "must be >= 1")
        if not 0 <= self.beta < math.inf:
            fail(f"{k}.beta", self.beta, "must be a finite number >= 0")


@dataclass
class TrainConfig:
    model: str = "cnn_small"
    epochs: int = 10
    batch_size: int = 128
    augment: bool = True             # random crop (pad 4) + horizontal flip, on the device
    optim: OptimConfig = field(default_factory=OptimConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    modes: list[str] = field(default_factory=lambda: ["standard", "trades"])  # the train matrix
    seeds: list[int] = field(default_factory=lambda: [0])
    device: str = "auto"
    amp: bool = True                 # bf16 autocast on CUDA (ignored on CPU)
    channels_last: bool = True       # NHWC memory format (faster on CUDA, and on CPU for the demo nets)
    compile: bool = False            # torch.compile the model (CUDA only)
    deterministic: bool = False      # torch.use_deterministic_algorithms on CUDA (slower)
    eval_every: int = 0              # >0: clean accuracy on the test subset every k epochs (logged)

    def check(self, k: str) -> None:
        from .models import MODELS

        if self.model not in MODELS:
            fail(f"{k}.model", self.model, f"choose one of {sorted(MODELS)}")
        if self.epochs < 1:
            fail(f"{k}.epochs", self.epochs, "must be >= 1")
        if self.batch_size < 1:
            fail(f"{k}.batch_size", self.batch_size, "must be >= 1")
        if not self.modes or any(m not in MODES for m in self.modes):
            fail(f"{k}.modes", self.modes, f"a non-empty list from {list(MODES)}")
        if not self.seeds or any(s < 0 for s in self.seeds):
            fail(f"{k}.seeds", self.seeds, "a non-empty list of seeds >= 0")
        if self.device not in DEVICES:
            fail(f"{k}.device", self.device, f"choose one of {list(DEVICES)}")
        if self.eval_every < 0:
            fail(f"{k}.eval_every", self.eval_every, "must be >= 0")
        self.optim.check(f"{k}.optim")
        self.attack.check(f"{k}.attack")


@dataclass
class AIGNConfig:
    mode: str = "exact"      # exact: eval-mode pass over the un-augmented set after each tracked epoch;
                             # inline: reuse the training step's input gradient; both; off
    every: int = 1           # track every k-th epoch (and always the last)
    batch_size: int = 128    # for the exact pass (on CPU, 128 measured 2x faster than 512: cache effects)
    squared: bool = False    # the default score's norm is squared before averaging
    p: float = 2.0           # the default score's norm (1, 2 or inf); all three are stored

    def check(self, k: str) -> None:
        if self.mode not in AIGN_MODES:
            fail(f"{k}.mode", self.mode, f"choose one of {list(AIGN_MODES)}")
        if self.every < 1:
            fail(f"{k}.every", self.every, "must be >= 1")
        if self.batch_size < 1:
            fail(f"{k}.batch_size", self.batch_size, "must be >= 1")
        if float(self.p) not in NORMS:
            fail(f"{k}.p", self.p, "choose 1, 2 or inf")


@dataclass
class ProxyConfig:
    """The full-data run that records AIGN and the training dynamics every coreset method needs."""
    model: str = "cnn_small"
    epochs: int = 10
    batch_size: int = 128
    augment: bool = True
    seed: int = 0
    optim: OptimConfig = field(default_factory=OptimConfig)
    aign: AIGNConfig = field(default_factory=AIGNConfig)
    deepfool_steps: int = 50         # DeepFool iterations for the boundary distance at the final checkpoint
    deepfool_candidates: int = 0     # DeepFool linearises towards the top-k classes of the clean logits; 0 = all
    transfer_model: Optional[str] = "resnet_tiny"  # a second proxy architecture (model-agnostic claim); null = none

    def check(self, k: str) -> None:
        from .models import MODELS

        for name in ("model",) + (("transfer_model",) if self.transfer_model is not None else ()):
            if getattr(self, name) not in MODELS:
                fail(f"{k}.{name}", getattr(self, name), f"choose one of {sorted(MODELS)}")
        if self.epochs < 1:
            fail(f"{k}.epochs", self.epochs, "must be >= 1")
        if self.batch_size < 1:
            fail(f"{k}.batch_size", self.batch_size, "must be >= 1")
        if self.seed < 0:
            fail(f"{k}.seed", self.seed, "must be >= 0")
        if self.deepfool_steps < 1:
            fail(f"{k}.deepfool_steps", self.deepfool_steps, "must be >= 1")
        if self.deepfool_candidates < 0 or self.deepfool_candidates == 1:
            fail(f"{k}.deepfool_candidates", self.deepfool_candidates, "0 (all classes) or >= 2")
        self.optim.check(f"{k}.optim")
        self.aign.check(f"{k}.aign")

    def as_train(self, model: Optional[str] = None) -> TrainConfig:
        return TrainConfig(model=model or self.model, epochs=self.epochs, batch_size=self.batch_size,
                           augment=self.augment, optim=self.optim, modes=["standard"], seeds=[self.seed])


@dataclass
class CoresetConfig:
    methods: list[str] = field(default_factory=lambda: ["random", "easycore", "hard", "el2n", "forgetting", "grand", "moderate"])
    fractions: list[float] = field(default_factory=lambda: [0.3])
    balanced: bool = False           # per-class quotas instead of one global sort
    seed: int = 0
    window: str = "all"              # AIGN epochs averaged: all | first:K | last:K
    p: float = 2.0                   # AIGN norm: 1, 2 or inf
    squared: bool = False            # square the per-epoch norm before averaging
    score_epochs: int = 3            # EL2N averaged over the first K epochs; GraNd at epoch K
    ccs_score: str = "aign"          # CCS stratifies on this score (aign | el2n | forgetting | aum | grand)
    ccs_cutoff: float = 0.1          # CCS drops this fraction of the hardest samples first
    moderate_band: float = 0.0       # unused when 0: moderate keeps the band around the median distance

    def check(self, k: str) -> None:
        from .coresets import METHODS

        if not self.methods or any(m not in METHODS for m in self.methods):
            fail(f"{k}.methods", self.methods, f"a non-empty list from {sorted(METHODS)}")
        if not self.fractions or any(not (0 < f <= 1) for f in self.fractions):
            fail(f"{k}.fractions", self.fractions, "each fraction must be in (0, 1]")
        if self.seed < 0:
            fail(f"{k}.seed", self.seed, "must be >= 0")
        if not _window_ok(self.window):
            fail(f"{k}.window", self.window, "all | first:K | last:K with K >= 1")
        if float(self.p) not in NORMS:
            fail(f"{k}.p", self.p, "choose 1, 2 or inf")
        if self.score_epochs < 1:
            fail(f"{k}.score_epochs", self.score_epochs, "must be >= 1")
        if self.ccs_score not in ("aign", "el2n", "forgetting", "aum", "grand"):
            fail(f"{k}.ccs_score", self.ccs_score, "choose aign, el2n, forgetting, aum or grand")
        if not 0 <= self.ccs_cutoff < 1:
            fail(f"{k}.ccs_cutoff", self.ccs_cutoff, "must be in [0, 1)")
        if not 0 <= self.moderate_band < 1:
            fail(f"{k}.moderate_band", self.moderate_band, "must be in [0, 1)")


@dataclass
class EvalConfig:
    n_test: int = 500                # test samples attacked (the first n of the test subset)
    batch_size: int = 256
    eps: float = 8 / 255             # Linf budget
    alpha: float = 2 / 255           # PGD step
    pgd_steps: int = 20
    fgsm: bool = True
    pgd50_restarts: int = 0          # >0: PGD-50 with this many restarts
    l2_eps: float = 0.0              # >0: L2 PGD-20 with this budget (0.5 is standard)
    autoattack: bool = False         # standard AutoAttack through torchattacks
    autoattack_n: int = 100          # samples given to AutoAttack (it is slow)
    sanity: bool = True              # gradient-masking sanity checks

    def check(self, k: str) -> None:
        if self.n_test < 1:
            fail(f"{k}.n_test", self.n_test, "must be >= 1")
        if self.batch_size < 1:
            fail(f"{k}.batch_size", self.batch_size, "must be >= 1")
        if not 0 <= self.eps <= 1:
            fail(f"{k}.eps", self.eps, "must be in [0, 1]")
        if not 0 < self.alpha < math.inf:
            fail(f"{k}.alpha", self.alpha, "must be a finite number > 0")
        if self.pgd_steps < 1:
            fail(f"{k}.pgd_steps", self.pgd_steps, "must be >= 1")
        if self.pgd50_restarts < 0:
            fail(f"{k}.pgd50_restarts", self.pgd50_restarts, "must be >= 0")
        if not 0 <= self.l2_eps < math.inf:
            fail(f"{k}.l2_eps", self.l2_eps, "must be a finite number >= 0")
        if self.autoattack_n < 1:
            fail(f"{k}.autoattack_n", self.autoattack_n, "must be >= 1")


@dataclass
class ReportConfig:
    grid_per_class: int = 8          # images per class in easiest/hardest grids
    formats: list[str] = field(default_factory=lambda: ["png", "svg"])

    def check(self, k: str) -> None:
        if self.grid_per_class < 1:
            fail(f"{k}.grid_per_class", self.grid_per_class, "must be >= 1")
        if not self.formats or any(f not in ("png", "svg", "pdf") for f in self.formats):
            fail(f"{k}.formats", self.formats, "a non-empty list from ['png', 'svg', 'pdf']")


@dataclass
class Params:
    data: DataConfig = field(default_factory=DataConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    coreset: CoresetConfig = field(default_factory=CoresetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def check(self) -> "Params":
        for f in dataclasses.fields(self):
            getattr(self, f.name).check(f.name)
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- parsing
def _window_ok(w: str) -> bool:
    if w == "all":
        return True
    head, _, k = w.partition(":")
    return head in ("first", "last") and k.isdigit() and int(k) >= 1


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


def load_params(path: str | os.PathLike = "params.yaml", overrides: Optional[list[str]] = None) -> Params:
    """Read, override (`key.sub=value`, YAML-parsed) and validate params. Raises ConfigError."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"params: file {path} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"params: {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if overrides and not isinstance(data, dict):
        fail("params", data, f"{path} must hold a mapping of sections (data, proxy, coreset, train, eval, report)")
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
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"params: override {ov!r}: value is not valid YAML: {str(e).splitlines()[0]}") from None
    return params_from_dict(data)
