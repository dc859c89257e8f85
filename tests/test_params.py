"""Bad params are rejected with one clear line naming the key and the value; good ones pass."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from _reliability import REPO, error_lines, make_image_folder, run_cli
from easycore.pipeline import stages as pipeline
from easycore.config import ConfigError, Params, load_params, params_from_dict
from easycore.data.loaders import balanced_subset, cifar10_extracted, load_dataset


def nested(dotted: str, value) -> dict:
    """'train.optim.lr', 0.1 -> {'train': {'optim': {'lr': 0.1}}}"""
    *heads, last = dotted.split(".")
    d = {last: value}
    for h in reversed(heads):
        d = {h: d}
    return d


# (dotted key set in params.yaml, bad value, key the message must name, value text the message must show)
BAD = [
    ("coreset.fractions", [0], "coreset.fractions", "[0.0]"),
    ("coreset.fractions", [0.3, 1.5], "coreset.fractions", "1.5"),
    ("coreset.fractions", ["a"], "coreset.fractions[0]", "'a'"),
    ("coreset.fractions", 0.3, "coreset.fractions", "0.3"),              # not a list
    ("coreset.methods", ["random", "magic"], "coreset.methods", "'magic'"),
    ("coreset.window", "mid:3", "coreset.window", "'mid:3'"),
    ("coreset.window", "first:0", "coreset.window", "'first:0'"),
    ("coreset.p", 3, "coreset.p", "3"),
    ("coreset.ccs_cutoff", 1.0, "coreset.ccs_cutoff", "1.0"),
    ("coreset.ccs_score", "loss", "coreset.ccs_score", "'loss'"),
    ("train.attack.eps", -0.1, "train.attack.eps", "-0.1"),
    ("train.attack.steps", 0, "train.attack.steps", "0"),
    ("train.attack.alpha", 0, "train.attack.alpha", "0"),
    ("eval.eps", 2, "eval.eps", "2"),
    ("eval.n_test", 0, "eval.n_test", "0"),
    ("eval.pgd_steps", -1, "eval.pgd_steps", "-1"),
    ("data.dataset", "tiny_imagenet", "data.dataset", "'tiny_imagenet'"),
    ("data.n_per_class", 0, "data.n_per_class", "0"),
    ("data.test_n_per_class", -5, "data.test_n_per_class", "-5"),
    ("data.n_per_class", "all", "data.n_per_class", "'all'"),           # string for int
    ("data.seed", -1, "data.seed", "-1"),
    ("data.download", "yes", "data.download", "'yes'"),                 # quoted string for bool
    ("data.root", 3, "data.root", "3"),                                 # int for str
    ("train.model", "vit", "train.model", "'vit'"),
    ("proxy.model", "mlp", "proxy.model", "'mlp'"),
    ("proxy.transfer_models", ["vgg"], "proxy.transfer_models", "'vgg'"),
    ("coreset.fractions", [0.3, 0.3], "coreset.fractions", "repeat"),          # duplicated runs
    ("train.seeds", [0, 0], "train.seeds", "repeat"),
    ("coreset.methods", ["random", "random"], "coreset.methods", "repeat"),
    ("coreset.methods", ["acs_craig"], "coreset.methods", "'acs_craig'"),     # adaptive in the static list
    ("coreset.fractions", [1.0], "coreset.fractions", "1.0"),                 # the full-data run is its own
    ("eval.attacks", ["pgd", "magic"], "eval.attacks", "'magic'"),
    ("train.modes", ["standard", "fgsm"], "train.modes", "'fgsm'"),
    ("train.optim.schedule", "linear", "train.optim.schedule", "'linear'"),
    ("train.epochs", "ten", "train.epochs", "'ten'"),                   # string for int
    ("train.batch_size", 12.5, "train.batch_size", "12.5"),            # float for int
    ("train.epochs", True, "train.epochs", "True"),                    # bool for int
    ("train.augment", [True], "train.augment", "[True]"),              # list for bool
    ("train.seeds", [], "train.seeds", "[]"),
    ("train.seeds", [0, -1], "train.seeds", "-1"),
    ("runtime.device", "tpu", "runtime.device", "'tpu'"),
    ("train.optim.lr", float("nan"), "train.optim.lr", "nan"),
    ("train.optim.lr", 0, "train.optim.lr", "0"),
    ("train.optim.lr", float("inf"), "train.optim.lr", "inf"),
    ("train.optim.lr", "fast", "train.optim.lr", "'fast'"),
    ("train.optim.momentum", 1.0, "train.optim.momentum", "1.0"),
    ("train.optim.weight_decay", -1e-4, "train.optim.weight_decay", "-0.0001"),
    ("train.optim.milestones", [0.75, 0.5], "train.optim.milestones", "[0.75, 0.5]"),
    ("train.optim.milestones", [0.5, 1.0], "train.optim.milestones", "1.0"),
    ("proxy.aign.mode", "fast", "proxy.aign.mode", "'fast'"),
    ("proxy.aign.p", 0.5, "proxy.aign.p", "unknown key"),                   # removed: it was read nowhere
    ("proxy.aign.every", 0, "proxy.aign.every", "0"),
    ("proxy.epochs", 0, "proxy.epochs", "0"),
    ("report.formats", ["gif"], "report.formats", "'gif'"),
    ("train", 5, "train", "5"),                                         # section not a mapping
    ("bogus", 1, "bogus", "unknown key"),                               # unknown top-level key
    ("train.optim.lr_max", 1.0, "train.optim.lr_max", "unknown key"),   # unknown nested key
    ("train.epoch", 3, "train.epoch", "unknown key"),                   # typo of epochs
]


def _check_message(msg: str, key: str, shown: str) -> None:
    assert "\n" not in msg, f"not one line: {msg!r}"
    assert msg.startswith("params:"), msg
    assert key in msg, f"message does not name {key!r}: {msg}"
    assert shown in msg, f"message does not show {shown!r}: {msg}"


@pytest.mark.parametrize("dotted,value,key,shown", BAD, ids=[f"{b[0]}={b[1]!r}" for b in BAD])
def test_bad_value_yaml(tmp_path, dotted, value, key, shown):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(nested(dotted, value)))
    with pytest.raises(ConfigError) as ei:
        load_params(path)
    _check_message(str(ei.value), key, shown)
    # the same through the dict entry point
    with pytest.raises(ConfigError) as ei2:
        params_from_dict(nested(dotted, value))
    assert str(ei2.value) == str(ei.value)


def test_enough_bad_cases():
    assert len(BAD) >= 25 and len({b[2] for b in BAD}) >= 25


def test_nesterov_without_momentum(tmp_path):
    with pytest.raises(ConfigError) as ei:
        params_from_dict({"train": {"optim": {"momentum": 0.0, "nesterov": True}}})
    _check_message(str(ei.value), "train.optim.nesterov", "True")


@pytest.mark.parametrize("text,needle", [
    ("train: [1, 2\n", "not valid YAML"),
    ("- a\n- b\n", "params"),                      # top level is a list
])
def test_unreadable_file(tmp_path, text, needle):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as ei:
        load_params(path)
    assert needle in str(ei.value) and "\n" not in str(ei.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")


@pytest.mark.parametrize("override,needle", [
    ("train.epochs", "key.sub=value"),              # no '='
    ("train.epochs=[1", "not valid YAML"),          # value is not YAML
    ("train.epochs.x=1", "not a section"),          # descends into a scalar
    ("train.epochs=0", "train.epochs"),              # validated like the file
    ("train.optim.lr=-1", "train.optim.lr"),
])
def test_bad_override(tmp_path, override, needle):
    path = tmp_path / "p.yaml"
    path.write_text("train:\n  epochs: 2\n")
    with pytest.raises(ConfigError) as ei:
        load_params(path, [override])
    assert needle in str(ei.value) and "\n" not in str(ei.value)


def test_valid_defaults_and_spellings(tmp_path):
    Params().check()
    assert params_from_dict({}) == Params()
    path = tmp_path / "p.yaml"
    # YAML 1.1 (PyYAML) reads 5e-4 as a string: it must still be accepted as a number
    path.write_text("train:\n  optim:\n    lr: 1e-2\n    weight_decay: 5e-4\ncoreset:\n  p: inf\n"
                    "eval:\n")  # an empty section reads as null = defaults
    p = load_params(path, ["train.epochs=3", "eval.n_test=7", "data.n_per_class=null"])
    assert p.train.optim.lr == pytest.approx(0.01) and p.train.optim.weight_decay == pytest.approx(5e-4)
    assert math.isinf(p.coreset.p)
    assert p.train.epochs == 3 and p.eval.n_test == 7 and p.data.n_per_class is None


@pytest.mark.parametrize("name", ["params.yaml", "params-paper.yaml", "params-study.yaml", "params-study-v2.yaml",
                                  "params-imagenet.yaml"])
def test_repo_params_files_are_valid(name):
    load_params(REPO / name)


# ----------------------------------------------------------------------------- CLI
@pytest.mark.parametrize("text,key", [
    ("train:\n  optim:\n    lr: .nan\n", "train.optim.lr"),
    ("data:\n  dataset: synthetic\n  colour: red\n", "data.colour"),
], ids=["nan-lr", "unknown-key"])
def test_cli_bad_params(tmp_path, text, key):
    (tmp_path / "bad.yaml").write_text(text)
    out = tmp_path / "OUT"
    r = run_cli(["prepare", "--params", "bad.yaml", "--out", str(out)], cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = error_lines(r.stderr)
    assert len(lines) == 1, r.stderr
    assert key in lines[0] and lines[0].startswith("easycore prepare: error: params:")
    assert not out.exists()


# ----------------------------------------------------------------------------- n_per_class vs the data
def test_balanced_subset_too_many():
    labels = np.repeat([0, 1, 2], [5, 3, 5])
    with pytest.raises(ConfigError) as ei:
        balanced_subset(labels, 4, seed=0)
    msg = str(ei.value)
    assert "data.n_per_class" in msg and "4" in msg and "class 1 has only 3" in msg and "\n" not in msg
    with pytest.raises(ConfigError, match="data.test_n_per_class"):
        balanced_subset(labels, 4, seed=0, key="data.test_n_per_class")
    assert len(balanced_subset(labels, 3, seed=0)) == 9


def _folder_params(root: Path, **data) -> Params:
    return params_from_dict({"data": {"dataset": "cifar10", "root": str(root), **data}})


def test_n_per_class_larger_than_class_image_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("EASYCORE_DATA", raising=False)
    monkeypatch.setenv("EASYCORE_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "data"
    make_image_folder(root / "cifar10-jpeg", n_train=3, n_test=2)
    out = tmp_path / "prepared"
    with pytest.raises(ConfigError) as ei:
        pipeline.prepare(_folder_params(root, n_per_class=4, test_n_per_class=2), out)
    assert "data.n_per_class" in str(ei.value) and "only 3" in str(ei.value)
    with pytest.raises(ConfigError) as ei:
        pipeline.prepare(_folder_params(root, n_per_class=3, test_n_per_class=3), out)
    assert "data.test_n_per_class" in str(ei.value) and "only 2" in str(ei.value)
    assert not out.exists()
    info = pipeline.prepare(_folder_params(root, n_per_class=3, test_n_per_class=2), out)
    assert info["train"]["n"] == 6 and info["test"]["n"] == 4

    # and through the CLI: exit 2, one line naming the key, nothing written
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"data": {"dataset": "cifar10", "root": str(root),
                                                              "n_per_class": 4, "test_n_per_class": 1}}))
    r = run_cli(["prepare", "--params", "p.yaml", "--out", str(tmp_path / "OUT")], cwd=tmp_path,
                EASYCORE_CACHE=tmp_path / "cache")
    assert r.returncode == 2 and len(error_lines(r.stderr)) == 1, r.stderr
    assert "data.n_per_class" in r.stderr
    assert not (tmp_path / "OUT").exists()


def _shared_cifar_extracted() -> Path | None:
    tgz = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
    if not tgz.exists():
        return None
    return tgz.parent if (cifar10_extracted(tgz.parent, tgz) / ".complete").exists() else None


def test_n_per_class_larger_than_class_cifar10(monkeypatch):
    root = _shared_cifar_extracted()
    if root is None:
        pytest.skip("../shared/data/cifar10-jpeg.tar.gz is absent or not yet extracted in the cache")
    monkeypatch.delenv("EASYCORE_DATA", raising=False)
    with pytest.raises(ConfigError) as ei:
        load_dataset("cifar10", "train", root, n_per_class=5001, key="data.n_per_class")
    assert "data.n_per_class" in str(ei.value) and "5001" in str(ei.value) and "only 5000" in str(ei.value)
