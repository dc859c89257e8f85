"""Hardening: every bad input gives one clear line and exit 2, leaves nothing half-written and deletes nothing
published; stale resume checkpoints are never resumed; the CLI documents every option, prints its key results and
stays quiet.

The bad-input table runs the real CLI (`python -m easycore ...`, one subprocess per case) in a tiny synthetic repo;
every case has its own sandbox holding its inputs and an already published output folder, and the whole repo is
hashed (content and mode of every file) before and after the table.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import pickle
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest
import torch
import yaml

from _reliability import error_lines, run_cli, sub_env
from easycore import cli, report
from easycore.pipeline import datasource
from easycore.pipeline import stages as pipeline, runs
from easycore.core import train as train_mod
from easycore.config import load_params, params_from_dict
from easycore.core.models import build_model
from easycore.store import save_arrays, write_json

TINY = {
    "data": {"dataset": "synthetic", "n_per_class": 4, "test_n_per_class": 2, "seed": 0},
    "runtime": {"device": "cpu"},
    "proxy": {"model": "cnn_tiny", "transfer_models": [], "epochs": 1, "batch_size": 16, "deepfool_steps": 1,
              "aign": {"mode": "exact", "batch_size": 64}},
    "coreset": {"methods": ["random", "easycore"], "fractions": [0.5], "score_epochs": 1},
    "train": {"model": "cnn_tiny", "epochs": 1, "batch_size": 16, "modes": ["standard"], "seeds": [0]},
    "eval": {"n_test": 8, "pgd_steps": 1, "attacks": ["fgsm", "pgd"], "eps_grid": [0.0], "sanity": False},
    "report": {"grid_per_class": 1, "formats": ["png"]},
}
N_TRAIN = 40          # synthetic: 10 classes x n_per_class


@contextlib.contextmanager
def chdir(path: Path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def tree(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under root: relative path -> (sha256, mode)."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode & 0o777)
            for p in sorted(root.rglob("*")) if p.is_file()}


class Evil:
    """Unpickling this calls open(target, 'w'): the target appears if a loader runs code from the file."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def evil_pickle(target: Path) -> bytes:
    return pickle.dumps({"w": torch.ones(3), "x": Evil(target)}, protocol=2)


def evil_torch_zip(path: Path, target: Path) -> None:
    torch.save({"x": torch.ones(3), "y": torch.zeros(3, dtype=torch.long), "evil": Evil(target)}, path)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A tiny repo: params.yaml, data/prepared (synthetic, 40 train / 20 test), a good model file."""
    root = tmp_path_factory.mktemp("harden") / "repo"
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(TINY))
    params = params_from_dict(TINY)
    with chdir(root):
        pipeline.prepare(params, Path("data/prepared"))
    tr = pipeline.ArrayDataset.load(root / "data/prepared/train.safetensors")
    torch.manual_seed(0)
    net = build_model("cnn_tiny", tr.num_classes, tr.in_channels, *tr.stats)
    train_mod.save_model(root / "models/good.safetensors", net, pipeline._model_meta(tr, "cnn_tiny"))
    return root


# ----------------------------------------------------------------------------- the bad-input table
@dataclass
class Case:
    id: str
    args: list[str]                      # "{S}": the case's sandbox (relative to the repo)
    needles: tuple[str, ...]             # must all appear in the error line ("{S}" expanded)
    make: Optional[Callable[[Path, Path], None]] = None   # make(sandbox, repo): write the bad input
    usage: bool = False                  # an argparse error: usage lines, then the error line


def _params(**sections) -> Callable[[Path, Path], None]:
    def make(s: Path, repo: Path) -> None:
        p = yaml.safe_load(yaml.safe_dump(TINY))
        for sec, kv in sections.items():
            p.setdefault(sec, {}).update(kv)
        (s / "p.yaml").write_text(yaml.safe_dump(p))
    return make


def _text_params(text: str) -> Callable[[Path, Path], None]:
    return lambda s, repo: (s / "p.yaml").write_text(text)


def _model(kind: str) -> Callable[[Path, Path], None]:
    def make(s: Path, repo: Path) -> None:
        good = (repo / "models/good.safetensors").read_bytes()
        m = s / "model.safetensors"
        if kind == "evil":
            m.write_bytes(evil_pickle(s / "PWNED"))
        elif kind == "evil_zip":
            evil_torch_zip(m, s / "PWNED")
        elif kind == "truncated":
            m.write_bytes(good[: len(good) // 2])
        elif kind == "no_meta":
            from safetensors.torch import save_file
            save_file(build_model("cnn_tiny", 10, 3, (0.5,) * 3, (0.25,) * 3).state_dict(), str(m))
        elif kind == "other_arch":                       # resnet_tiny weights, meta naming cnn_tiny
            tr = pipeline.ArrayDataset.load(repo / "data/prepared/train.safetensors")
            net = build_model("resnet_tiny", tr.num_classes, tr.in_channels, *tr.stats)
            from easycore.store import save_tensors
            save_tensors(m, net.state_dict(), pipeline._model_meta(tr, "cnn_tiny"))
        elif kind in ("nan_weights", "other_dataset", "str_classes", "one_channel"):   # issue 25 items 6, 12
            tr = pipeline.ArrayDataset.load(repo / "data/prepared/train.safetensors")
            meta = pipeline._model_meta(tr, "cnn_tiny")
            torch.manual_seed(0)
            net = build_model("cnn_tiny", tr.num_classes, tr.in_channels, *tr.stats)
            if kind == "nan_weights":
                with torch.no_grad():
                    for prm in net.parameters():
                        prm.fill_(float("nan"))
            elif kind == "other_dataset":
                meta["dataset"] = "cifar10"
            elif kind == "str_classes":
                meta["num_classes"] = "10"
            else:
                net = build_model("cnn_tiny", tr.num_classes, 1, (0.5,), (0.25,))
                meta.update(in_channels=1, mean=[0.5], std=[0.25])
            from easycore.store import save_tensors
            save_tensors(m, net.state_dict(), meta)
    return make


def _indices(kind: str) -> Callable[[Path, Path], None]:
    def make(s: Path, repo: Path) -> None:
        p = s / "indices.npy"
        if kind == "truncated":
            np.save(p, np.arange(0, N_TRAIN, 2, dtype=np.int64))
            data = p.read_bytes()
            p.write_bytes(data[: len(data) - 40])
        elif kind == "object":
            np.save(p, np.array([1, 2, Evil(s / "PWNED")], dtype=object), allow_pickle=True)
        elif kind == "float":
            np.save(p, np.arange(0, N_TRAIN, 2).astype(np.float64))
        elif kind == "empty":
            np.save(p, np.zeros(0, dtype=np.int64))
    return make


def _evil_prepared(s: Path, repo: Path) -> None:
    prep = s / "prep"
    prep.mkdir()
    for f in ("test.safetensors", "info.json"):
        (prep / f).write_bytes((repo / "data/prepared" / f).read_bytes())
    evil_torch_zip(prep / "train.safetensors", s / "PWNED")


def _prepared(kind: str) -> Callable[[Path, Path], None]:
    """{S}/prep: the repo's prepared set with a damaged train split (issue 25 item 5)."""
    def make(s: Path, repo: Path) -> None:
        from easycore.store import load_tensors, save_tensors
        prep = s / "prep"
        prep.mkdir()
        for f in ("test.safetensors", "info.json"):
            (prep / f).write_bytes((repo / "data/prepared" / f).read_bytes())
        t, m = load_tensors(repo / "data/prepared/train.safetensors")
        if kind == "y_short":
            t["y"] = t["y"][:-3]
        elif kind == "float_pixels":
            t["x"] = t["x"].float() / 255
        elif kind == "int64_pixels":
            t["x"] = t["x"].long()
        elif kind == "label_range":
            t["y"] = t["y"].clone()
            t["y"][0] = 10
        elif kind == "tampered":                   # other pixels under the old fingerprint
            t["x"] = t["x"].clone()
            t["x"][0] = 0
        save_tensors(prep / "train.safetensors", t, m)
    return make


TRAIN = ["train", "--mode", "standard", "--out", "{S}/out"]
EVAL = ["eval", "--model-path", "{S}/model.safetensors", "--out", "{S}/out"]
CASES = [
    # unsafe or damaged artifacts
    Case("eval_evil_pickle", EVAL, ("{S}/model.safetensors is corrupt or truncated",), _model("evil")),
    Case("eval_evil_torch_zip", EVAL, ("{S}/model.safetensors is corrupt or truncated",), _model("evil_zip")),
    Case("eval_truncated_model", EVAL, ("{S}/model.safetensors is corrupt or truncated",), _model("truncated")),
    Case("eval_model_without_meta", EVAL, ("{S}/model.safetensors is not a model written by easycore",
                                           "lacks model, num_classes"), _model("no_meta")),
    Case("eval_other_architecture", EVAL, ("{S}/model.safetensors does not hold the weights of the model its "
                                           "metadata names ('cnn_tiny'): ", "tensors missing (e.g. "),
         _model("other_arch")),
    # issue 25: a NaN model is not "perfectly robust"; a model is evaluated only on its own kind of data
    Case("eval_nan_weights", EVAL, ("logits are NaN or inf on 8 of 8 clean test images",), _model("nan_weights")),
    Case("eval_other_dataset", EVAL, ("{S}/model.safetensors was built for dataset 'cifar10' but the test set has "
                                      "'synthetic'",), _model("other_dataset")),
    Case("eval_string_num_classes", EVAL, ("{S}/model.safetensors: model metadata num_classes = '10' is not valid",),
         _model("str_classes")),
    Case("eval_one_channel_model", EVAL, ("{S}/model.safetensors was built for in_channels 1 but the test set has 3",),
         _model("one_channel")),
    Case("train_evil_prepared", TRAIN + ["--full", "--prepared", "{S}/prep"],
         ("{S}/prep/train.safetensors is corrupt or truncated",), _evil_prepared),
    Case("train_truncated_indices", TRAIN + ["--indices", "{S}/indices.npy"],
         ("{S}/indices.npy", "corrupt or truncated"), _indices("truncated")),
    Case("train_object_indices", TRAIN + ["--indices", "{S}/indices.npy"],
         ("refusing to load {S}/indices.npy: an object array",), _indices("object")),
    Case("train_float_indices", TRAIN + ["--indices", "{S}/indices.npy"],
         ("{S}/indices.npy: indices must be integers, got dtype float64",), _indices("float")),
    # issue 25 item 5: empty or mismatched inputs
    Case("select_empty_coreset", ["select", "--method", "random", "--fraction", "0.0001", "--out", "{S}/out"],
         ("coreset fraction 0.0001 of 40 training samples keeps 0 samples",)),
    Case("train_empty_indices", TRAIN + ["--indices", "{S}/indices.npy"],
         ("{S}/indices.npy: the coreset is empty (0 samples)",), _indices("empty")),
    Case("train_labels_shorter", TRAIN + ["--full", "--prepared", "{S}/prep"],
         ("{S}/prep/train.safetensors is not a valid prepared dataset: 40 images but 37 labels",), _prepared("y_short")),
    Case("train_float_pixels", TRAIN + ["--full", "--prepared", "{S}/prep"],
         ("pixels must be uint8 [N, C, H, W], got float32",), _prepared("float_pixels")),
    Case("train_int64_pixels", TRAIN + ["--full", "--prepared", "{S}/prep"],
         ("pixels must be uint8 [N, C, H, W], got int64",), _prepared("int64_pixels")),
    Case("train_label_out_of_range", TRAIN + ["--full", "--prepared", "{S}/prep"],
         ("labels must be in [0, 10) (its classes), got [0, 10]",), _prepared("label_range")),
    Case("train_tampered_pixels", TRAIN + ["--full", "--prepared", "{S}/prep"],
         ("is not what its metadata's fingerprint (synthetic-train-n40-",), _prepared("tampered")),
    # issue 25 items 11, 12: params read alike by easycore and DVC; one line for unreadable files, allocation failures
    Case("yaml11_octal_seed", ["check", "--params", "{S}/p.yaml"],
         ("{S}/p.yaml, line 2: the integer '010' is read differently by YAML 1.1 (easycore) and YAML 1.2 (DVC)",),
         _text_params("train:\n  seeds: [0, 010]\n")),
    Case("binary_params", ["check", "--params", "{S}/p.yaml"], ("params: {S}/p.yaml is not a text (UTF-8) file",),
         lambda s, repo: (s / "p.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")),
    Case("folder_params", ["check", "--params", "{S}/pdir"], ("params: {S}/pdir is a folder, not a params file",),
         lambda s, repo: (s / "pdir").mkdir()),
    Case("absurd_n_per_class", ["prepare", "--set", "data.n_per_class=1000000000000000", "--out", "{S}/out"],
         ("out of memory (tried to allocate",)),
    # issue 25 item 9: nothing given on the command line or in params becomes a path outside its folder
    Case("report_dir_traversal", ["check", "--params", "{S}/p.yaml"],
         ("report.dir = 'x/../../outside' is not allowed; a folder inside the repository",),
         _params(report={"dir": "x/../../outside"})),
    Case("notebook_p_traversal", ["notebook", "aign_scores", "-p", "k", "../../../../outside_p2"],
         ("-p k '../../../../outside_p2' is not allowed",)),
    Case("notebook_name_traversal", ["notebook", "../../outside"], ("notebook '../../outside' is not allowed",)),
    Case("notebook_set_refused", ["notebook", "aign_scores", "--set", "train.epochs=2"],
         ("notebook: --set is not supported",)),
    Case("train_scores_traversal", ["train", "--method", "random", "--fraction", "0.5", "--scores", "../..",
                                    "--mode", "standard"], ("--scores '../..' is not allowed",)),
    Case("eval_scores_undeclared", ["eval", "--method", "random", "--fraction", "0.5", "--scores", "resnet_tiny",
                                    "--mode", "standard"], ("--scores 'resnet_tiny' is not allowed; use main, none",)),
    Case("proxy_name_shell", ["proxy", "--name", "x;touch PWNED;echo", "--out", "{S}/out"],
         ("--name 'x;touch PWNED;echo' is not allowed",)),
    # params (each through a different stage: all of them validate before touching anything)
    Case("unknown_key", ["prepare", "--params", "{S}/p.yaml", "--out", "{S}/out"],
         ("unknown key 'train.foo'",), _params(train={"foo": 1})),
    Case("unknown_key_override", TRAIN + ["--full", "--set", "train.foo=1"], ("unknown key 'train.foo'",)),
    Case("duplicated_seeds", ["check", "--params", "{S}/p.yaml"], ("train.seeds = [0, 0]", "must not repeat"),
         _params(train={"seeds": [0, 0]})),
    Case("duplicated_methods", ["select", "--params", "{S}/p.yaml", "--method", "random", "--fraction", "0.5",
                                "--out", "{S}/out"],
         ("coreset.methods = ['random', 'random']", "must not repeat"), _params(coreset={"methods": ["random"] * 2})),
    Case("duplicated_fractions", TRAIN + ["--params", "{S}/p.yaml", "--full"],
         ("coreset.fractions = [0.3, 0.3]", "must not repeat"), _text_params(
             "coreset:\n  fractions: [0.3, 0.30]\n")),
    Case("fraction_one", EVAL[:1] + ["--params", "{S}/p.yaml"] + EVAL[1:],
         ("coreset.fractions = [1.0]", "must be in (0, 1)"), _text_params("coreset:\n  fractions: [1.0]\n")),
    Case("fraction_spelling", ["proxy", "--params", "{S}/p.yaml", "--out", "{S}/out"],
         ("coreset.fractions = '3e-1'", "plain decimal"), _text_params("coreset:\n  fractions: [3e-1]\n")),
    Case("yaml_syntax", ["check", "--params", "{S}/p.yaml"],
         ("{S}/p.yaml is not valid YAML at line 3, column 1",),
         _text_params("data:\n  dataset: synthetic\n\tn_per_class: 4\n")),
    # argparse mistakes: one line too (no usage block), exit 2; the error line names the value
    Case("negative_seed", TRAIN + ["--full", "--seed", "-1"], ("argument --seed: must be >= 0, got -1",)),
    Case("unknown_mode", ["train", "--mode", "bogus_mode", "--full", "--out", "{S}/out"],
         ("argument --mode: invalid choice: 'bogus_mode'",)),
    Case("unknown_method", ["select", "--method", "bogus_method", "--fraction", "0.5", "--out", "{S}/out"],
         ("argument --method: invalid choice: 'bogus_method'",)),
]


def _sandbox(c: Case) -> str:
    return f"cases/{c.id}"


def _argv(c: Case) -> list[str]:
    return [a.replace("{S}", _sandbox(c)) for a in c.args]


# One process runs the whole table through `easycore.cli.main` (what `python -m easycore` runs), one call per case
# with its own stdout/stderr and fresh logging handlers: one torch import instead of one per case (a CLI process
# costs ~3 s of CPU). SPOT cases also run as their own `python -m easycore` process and must answer the same.
DRIVER = """
import contextlib, io, json, logging, sys
import easycore.cli as cli
out = {}
for cid, argv in json.loads(sys.argv[1]):
    o, e = io.StringIO(), io.StringIO()
    logging.root.handlers.clear()
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        try:
            rc = cli.main(argv)
        except SystemExit as x:
            rc = x.code
    out[cid] = {"returncode": rc, "stdout": o.getvalue(), "stderr": e.getvalue()}
print(json.dumps(out))
"""
SPOT = ("eval_evil_pickle", "train_object_indices", "yaml_syntax", "negative_seed")


@pytest.fixture(scope="module")
def table(repo):
    """Build every case's sandbox (inputs + a published output folder), run the table (and the SPOT cases as
    their own processes, alongside), and hash the repo before and after.
    Returns ({case id: {returncode, stdout, stderr}}, {spot id: CompletedProcess}, before, after)."""
    for c in CASES:
        s = repo / _sandbox(c)
        (s / "out").mkdir(parents=True)
        write_json(s / "out/metrics.json", {"clean": {"accuracy": 0.5, "n": 8}})     # published before
        (s / "out/model.safetensors").write_bytes((repo / "models/good.safetensors").read_bytes())
        if c.make:
            c.make(s, repo)
    before = tree(repo)
    by_id = {c.id: c for c in CASES}

    def driver():
        r = subprocess.run([sys.executable, "-c", DRIVER, json.dumps([(c.id, _argv(c)) for c in CASES])], cwd=repo,
                           env=sub_env(), capture_output=True, text=True, timeout=300)
        assert r.returncode == 0 and r.stderr == "", r.stderr[-3000:]
        return json.loads(r.stdout)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        table = pool.submit(driver)
        spots = dict(pool.map(lambda i: (i, run_cli(_argv(by_id[i]), cwd=repo)), SPOT))
        results = table.result()
    return results, spots, before, tree(repo)


def test_enough_cases():
    assert len(CASES) >= 20 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_one_line_exit_2_nothing_touched(table, repo, case):
    results, spots, before, after = table
    r = results[case.id]
    lines = error_lines(r["stderr"])
    cmd = case.args[0]
    assert r["returncode"] == 2, (r["returncode"], r["stderr"][-2000:])
    assert r["stdout"] == "", r["stdout"]
    if case.id in spots:                        # the same answer from its own `python -m easycore` process
        p = spots[case.id]
        assert (p.returncode, p.stdout, error_lines(p.stderr)) == (2, "", lines), p.stderr[-2000:]
    if case.usage:
        assert lines[0].startswith("usage: easycore"), lines
        line = lines[-1]
        assert all(not ln.startswith("easycore") for ln in lines[:-1]), lines
    else:
        assert len(lines) == 1, lines
        line = lines[0]
    assert line.startswith(f"easycore {cmd}: error: "), line
    for n in case.needles:
        assert n.replace("{S}", _sandbox(case)) in line, line
    # nothing created, changed or deleted: in the sandbox (its published out/, no .out.state.pt) or elsewhere
    assert not (repo / _sandbox(case) / "PWNED").exists(), "a loader ran code from the file"
    prefix = _sandbox(case) + "/"
    assert {k: v for k, v in after.items() if k.startswith(prefix)} == \
        {k: v for k, v in before.items() if k.startswith(prefix)}


def test_table_touched_nothing_outside_the_sandboxes(table):
    _, _, before, after = table
    keep = lambda t: {k: v for k, v in t.items() if not k.startswith("cases/")}  # noqa: E731
    assert keep(after) == keep(before)
    assert not any(k.startswith("runs/") for k in after), "a failing stage wrote runs/ (timings, params-ok)"


# ----------------------------------------------------------------------------- resume state files
def _params_and_data(repo: Path):
    params = params_from_dict(TINY)
    tr, te = pipeline.load_prepared(repo / "data/prepared")
    return params, tr, te


def _checkpoint(repo: Path, out: Path) -> Path:
    """The complete checkpoint `easycore train --full --out out` leaves (same identity as pipeline.train_run),
    written by train() itself."""
    params, tr, te = _params_and_data(repo)
    state = runs.state_path_for(out)
    res = train_mod.train(params.train, tr, mode="standard", seed=0, runtime=params.runtime, state_path=state,
                          test_set=te, progress=False)
    assert res.epochs_run == 1 and state.exists()
    return state


def _train_full(repo: Path, out: Path, caplog) -> str:
    """`pipeline.train_run` on the full set (run from out's folder: its timing log lands there); the log text."""
    params, _, _ = _params_and_data(repo)
    caplog.clear()
    with chdir(out.parent), caplog.at_level(logging.INFO):
        pipeline.train_run(params, out, mode="standard", seed=0, prepared=repo / "data/prepared", progress=False)
    return caplog.text


FRESH = "standard epoch 1/1"          # the loop's log line for a computed epoch


def test_checkpoint_of_the_same_code_resumes(repo, tmp_path, caplog):
    """Control for the two tests below: the checkpoint they alter would otherwise be resumed."""
    out = tmp_path / "run"
    state = _checkpoint(repo, out)
    log = _train_full(repo, out, caplog)
    assert f"resumed from {state}" in log and FRESH not in log
    assert not state.exists(), "the checkpoint is removed once the outputs are written"


def test_checkpoint_of_other_code_starts_fresh(repo, tmp_path, caplog, monkeypatch):
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(train_mod, "code_hash", lambda: "0123456789abcdef")      # written by another version
        state = _checkpoint(repo, out)
    assert train_mod.code_hash() != "0123456789abcdef"
    log = _train_full(repo, out, caplog)
    assert "was made with other settings, data or code; starting fresh" in log
    assert "resumed from" not in log and FRESH in log
    assert not state.exists() and (out / "model.safetensors").exists()


def _zero(sd):
    return {k: torch.zeros_like(v) for k, v in sd.items()}


DAMAGE = {   # issue 25 item 11: well-formed checkpoints of the right identity whose content cannot be resumed
    "epoch_99_zero_weights": (lambda st: st | {"epoch": 99, "model": _zero(st["model"])}, "epoch 99 is not a completed"),
    "epoch_negative": (lambda st: st | {"epoch": -5}, "epoch -5 is not a completed epoch of this 1-epoch run"),
    "no_rng": (lambda st: {k: v for k, v in st.items() if k != "rng"}, "random generator states are missing"),
    "bad_history": (lambda st: st | {"history": "x"}, "its history is not the records of epochs 1..1"),
    "nan_weights": (lambda st: st | {"model": {k: v.float() * float("nan") if v.is_floating_point() else v
                                               for k, v in st["model"].items()}}, "holds NaN or inf"),
    # issue 34 item 5: these gave a traceback on every re-run, "lower the learning rate", a skipped training with
    # an all-zero model, or negative pass counts in the published provenance
    "rng_torch_short": (lambda st: st | {"rng": st["rng"] | {"torch": torch.zeros(3, dtype=torch.uint8)}},
                        "random generator states are malformed (RuntimeError"),
    "rng_numpy_keys_wrong_shape": (lambda st: st | {"rng": st["rng"] | {"numpy": st["rng"]["numpy"] | {
        "keys": torch.zeros(5, dtype=torch.int64)}}}, "random generator states are malformed ("),
    "momentum_wrong_shape": (lambda st: _momentum(st, lambda b: torch.zeros(3)), "its optimizer state "
                             "'momentum_buffer' of parameter 0 is (3,) torch.float32, not the parameter's"),
    "momentum_nan": (lambda st: _momentum(st, lambda b: b * float("nan")),
                     "its optimizer state 'momentum_buffer' of parameter 0 holds NaN or inf"),
    "last_epoch_zero_weights": (lambda st: st | {"model": _zero(st["model"])}, "is all zeros"),
    "negative_counts": (lambda st: st | {"counts": {k: -5 for k in st["counts"]}}, "its counts are malformed"),
}


def _momentum(st, change):
    """The checkpoint with parameter 0's momentum buffer changed."""
    state = dict(st["optimizer"]["state"])
    state[0] = state[0] | {"momentum_buffer": change(state[0]["momentum_buffer"])}
    return st | {"optimizer": st["optimizer"] | {"state": state}}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damaged_checkpoint_of_the_right_identity_starts_fresh(repo, tmp_path, caplog, kind):
    from easycore.store import load_state, save_state

    out = tmp_path / "run"
    state = _checkpoint(repo, out)
    damage, why = DAMAGE[kind]
    save_state(state, damage(load_state(state)))
    log = _train_full(repo, out, caplog)
    assert f"ignoring damaged checkpoint {state} (" in log and why in log, log
    assert "resumed from" not in log and FRESH in log
    assert not state.exists() and (out / "model.safetensors").exists()


def test_checkpoint_older_than_the_outputs_is_removed(repo, tmp_path, caplog):
    """As after `dvc repro` restored the run's outputs from the cache: the leftover checkpoint is never resumed."""
    out = tmp_path / "run"
    state = _checkpoint(repo, out)
    out.mkdir()
    (out / "model.safetensors").write_bytes((repo / "models/good.safetensors").read_bytes())
    st = state.stat()
    os.utime(state, ns=(st.st_atime_ns, st.st_mtime_ns - 10**9))       # the outputs are newer
    log = _train_full(repo, out, caplog)
    assert f"removed stale checkpoint {state}" in log
    assert "resumed from" not in log and FRESH in log and not state.exists()


def test_checkpoint_newer_than_the_outputs_is_resumed(repo, tmp_path, caplog):
    """A re-run interrupted while the previous outputs were still there resumes."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.safetensors").write_bytes((repo / "models/good.safetensors").read_bytes())
    st = (out / "model.safetensors").stat()
    os.utime(out / "model.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns - 10**9))
    state = _checkpoint(repo, out)
    log = _train_full(repo, out, caplog)
    assert f"resumed from {state}" in log and "stale" not in log


def test_malicious_state_file_is_refused_and_the_run_starts_fresh(repo, tmp_path, caplog):
    out = tmp_path / "run"
    state = runs.state_path_for(out)
    evil_torch_zip(state, tmp_path / "PWNED")
    log = _train_full(repo, out, caplog)
    assert not (tmp_path / "PWNED").exists()
    assert "ignoring unreadable checkpoint (refusing to load" in log and FRESH in log
    assert (out / "model.safetensors").exists() and not state.exists()


def test_checkpoint_older_than_the_outputs_is_removed_by_proxy(repo, tmp_path, caplog):
    out = tmp_path / "runs/proxy/main"
    out.mkdir(parents=True)
    (out / "model.safetensors").write_bytes((repo / "models/good.safetensors").read_bytes())
    state = runs.state_path_for(out)
    state.write_bytes(b"an old checkpoint")
    os.utime(state, ns=(0, 0))
    with chdir(tmp_path), caplog.at_level(logging.INFO):
        pipeline.proxy(params_from_dict(TINY), "main", out, prepared=repo / "data/prepared", progress=False)
    assert f"removed stale checkpoint {state}" in caplog.text and "ignoring unreadable" not in caplog.text
    assert not state.exists() and (out / "dynamics.npz").exists()


# ----------------------------------------------------------------------------- successful runs through the CLI
def _cli(args, cwd, umask=None):
    return subprocess.run([sys.executable, "-m", "easycore", *args], cwd=cwd, env=sub_env(), capture_output=True,
                          text=True, timeout=180, umask=-1 if umask is None else umask)


def test_train_and_eval_print_their_results_with_the_umask_mode(repo, tmp_path):
    """`easycore train` prints one line with the final test accuracy, `easycore eval` one line with its key
    accuracies; every artifact has mode 0o666 & ~umask (not mkstemp's 0o600); nothing temporary is left."""
    from easycore.store import load_tensors

    work = tmp_path                      # its own folder: the table above checks that repo/runs stays empty
    (work / "params.yaml").write_text(yaml.safe_dump(TINY))
    prep = str(repo / "data/prepared")
    r = _cli(["train", "-q", "--full", "--mode", "standard", "--out", "runs/ok", "--prepared", prep], work,
             umask=0o027)
    assert r.returncode == 0, r.stderr[-3000:]
    _, meta = load_tensors(work / "runs/ok/model.safetensors")
    lines = r.stdout.splitlines()
    assert len(lines) == 1 and re.fullmatch(r"train: ok: cnn_tiny standard on 40 samples/epoch, test accuracy "
                                            r"\d\.\d{3} \(\d+s\)", lines[0]), lines
    assert f"test accuracy {meta['test_acc']:.3f}" in lines[0]

    r = _cli(["eval", "-q", "--model-path", "runs/ok/model.safetensors", "--out", "runs/ok-eval", "--prepared", prep],
             work, umask=0o027)
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = yaml.safe_load((work / "runs/ok-eval/metrics.json").read_text())
    accs = {k: v["accuracy"] for k, v in metrics.items() if isinstance(v, dict) and "accuracy" in v}
    assert {"clean", "fgsm", "pgd1", "robust"} <= accs.keys(), accs
    lines = r.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("evaluate: ok-eval on 8 test images: "), lines
    for k, v in accs.items():
        assert f"{k} {v:.3f}" in lines[0], (k, lines[0])

    written = [p for p in (work / "runs").rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {"model.safetensors", "history.json", "metrics.json", "outcomes.npz"}
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in written} == {p.name: oct(0o640) for p in written}
    assert not [p for p in written if ".tmp" in p.name or p.name.endswith(".state.pt")]


@pytest.mark.slow
def test_notebook_is_quiet_and_a_failure_keeps_the_published_copy(tmp_path):
    """`easycore notebook -q` prints its one result line and nothing from papermill or the kernel (no
    "[IPKernelApp] WARNING | Kernel is running over TCP ...", no "KeyboardInterrupt caught in kernel"); cell
    output goes into the executed notebook only; the notebook file gets the umask's mode. A failing cell: exit 2,
    one line naming the cell and the error, the published notebook untouched, the failed copy beside it."""
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks/tiny.py").write_text(
        '# %% tags=["parameters"]\nparams_path = "params.yaml"\n\n'
        '# %%\nimport sys\nprint("cell stdout")\nprint("cell stderr", file=sys.stderr)\n')
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY))
    r = _cli(["notebook", "-q", "tiny"], tmp_path, umask=0o027)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr == "", r.stderr
    assert r.stdout.splitlines() == ["notebook: tiny -> reports/notebooks/tiny.ipynb"]
    nb = tmp_path / "reports/notebooks/tiny.ipynb"
    assert "cell stderr" in nb.read_text() and "cell stdout" in nb.read_text()
    assert nb.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in nb.parent.iterdir()) == ["tiny.ipynb"]

    published = nb.read_bytes()
    with open(tmp_path / "notebooks/tiny.py", "a") as f:
        f.write('\n# %%\nraise ValueError("boom")\n')
    r = _cli(["notebook", "-q", "tiny"], tmp_path)
    assert r.returncode == 2 and r.stdout == "", (r.returncode, r.stdout, r.stderr[-3000:])
    (line,) = error_lines(r.stderr)                    # the cell's execution count in the executed copy
    assert re.fullmatch(r"easycore notebook: error: notebook tiny failed in cell \d+: ValueError: boom "
                        r"\(executed copy: reports/notebooks/tiny\.failed\.ipynb\)", line), line
    assert nb.read_bytes() == published
    assert sorted(p.name for p in nb.parent.iterdir()) == ["tiny.failed.ipynb", "tiny.ipynb"]


# ----------------------------------------------------------------------------- help texts, progress bars
def _subparsers():
    import argparse

    ap = cli.build_parser()
    (sub,) = [a for a in ap._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices


@pytest.mark.parametrize("cmd", sorted(_subparsers()))
def test_every_option_has_help_and_shows_its_default(cmd, capsys):
    parser = _subparsers()[cmd]
    with pytest.raises(SystemExit) as ei:
        cli.main([cmd, "--help"])
    assert ei.value.code == 0
    squash = lambda t: "".join(t.split())          # noqa: E731  (help is wrapped, also at hyphens)
    text = squash(capsys.readouterr().out)
    for a in parser._actions:
        if not a.option_strings or a.dest == "help":
            continue
        assert a.help, f"easycore {cmd} {a.option_strings[-1]} has no help text"
        assert squash(f"{a.help} (default: {a.default})") in text, (cmd, a.option_strings, a.default)


class _Bar:
    """A tqdm stand-in that records its total, unit and updates."""
    made: list["_Bar"] = []

    def __init__(self, iterable=None, total=None, unit="it", disable=False, desc="", **_):
        self.iterable, self.total, self.unit, self.disable, self.desc, self.n = iterable, total, unit, disable, desc, 0
        _Bar.made.append(self)

    def __iter__(self):
        for x in self.iterable:
            self.n += 1
            yield x

    def update(self, k=1):
        self.n += k

    def close(self):
        pass


def test_eval_progress_bars_count_images(monkeypatch):
    """Every evaluation bar (attacks, eps grid, AutoAttack) counts images: total = images attacked, and the
    updates sum to it. (The training bar and the exact-AIGN bar count batches: see the report.)"""
    import types

    from easycore.core import evaluate
    from easycore.config import EvalConfig

    monkeypatch.setattr(evaluate, "tqdm", _Bar)
    fake = types.ModuleType("torchattacks")
    fake.AutoAttack = lambda model, **kw: (lambda x, y: x)              # identity "attack": cheap, same shapes
    monkeypatch.setitem(sys.modules, "torchattacks", fake)
    _Bar.made.clear()
    torch.manual_seed(0)
    net = build_model("cnn_tiny", 10, 3, (0.5,) * 3, (0.25,) * 3).eval()
    x = torch.rand(10, 3, 32, 32)
    with torch.no_grad():
        y = net(x).argmax(1)                 # every image correct: tiny eps leave survivors for every stage
    cfg = EvalConfig(n_test=10, batch_size=4, eps=1e-4, alpha=5e-5, pgd_steps=1, attacks=["fgsm", "pgd"],
                     eps_grid=[0.0, 5e-5], sanity=False)
    metrics, _ = evaluate.evaluate_model(net, x, y, cfg, progress=True)
    ok = evaluate.autoattack(net, x[:7], y[:7], eps=1e-4, batch_size=4, progress=True)  # the autoattack stage's
    bars = {b.desc: b for b in _Bar.made if not b.disable}
    assert {"fgsm", "autoattack"} <= bars.keys() and len(bars) >= 4, list(bars)
    for b in bars.values():
        assert b.unit == "img" and b.total is not None and b.n == b.total, vars(b)
    assert bars["fgsm"].total == 10
    # the (identity) AutoAttack attacked the 7 images it was given and left them correct
    assert bars["autoattack"].total == 7 and bool(ok.all())


# ----------------------------------------------------------------------------- report: missing runs
RUN = runs.Run("main", "random", 0.5, "standard", 0)


@pytest.mark.parametrize("kind,status", [
    ("absent", "missing (not evaluated)"),
    ("no_accuracies", "missing (no accuracies in {d}/metrics.json)"),
    ("truncated_json", "missing ({d}/metrics.json is corrupt or truncated (not valid JSON"),
    ("no_outcomes", "missing (missing artifact {d}/outcomes.npz"),
    ("ok", "ok"),
])
def test_report_load_run_says_why_a_run_is_missing(tmp_path, kind, status):
    d = RUN.eval_dir(tmp_path)
    if kind != "absent":
        metrics = {"clean": {"accuracy": 0.5, "n": 4}, "meta": {"n": 4}}
        if kind == "no_accuracies":
            metrics = {"meta": {"n": 4}, "clean": {"n": 4}}
        write_json(d / "metrics.json", metrics)
        if kind != "no_outcomes":
            save_arrays(d / "outcomes.npz", {"clean": np.array([1, 0, 1, 0], bool)}, {"n": 4})
        if kind == "truncated_json":
            (d / "metrics.json").write_text('{"clean": {"accur')
    res = report.load_run(RUN, tmp_path)
    assert res.status.startswith(status.format(d=d)), res.status
    assert res.ok == (kind == "ok")
    if kind == "ok":
        assert res.metrics["clean"]["accuracy"] == 0.5 and res.outcomes["clean"].tolist() == [True, False, True, False]


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_proxy_records_are_one_line(repo, tmp_path, value):
    """Issue 25 item 12: NaN / inf in a proxy's dynamics.npz: `select` says so in one line (exit 2), writes nothing."""
    import shutil

    work = tmp_path / "w"
    shutil.copytree(repo / "data", work / "data")
    shutil.copy(repo / "params.yaml", work / "params.yaml")
    tr = pipeline.ArrayDataset.load(repo / "data/prepared/train.safetensors")
    rng = np.random.default_rng(0)
    m = lambda: rng.random((1, N_TRAIN)).astype(np.float32)  # noqa: E731
    arrays = {k: m() for k in ("aign_l1", "aign_l2", "aign_linf", "loss", "margin", "el2n", "grand", "entropy")}
    arrays.update(correct=np.ones((1, N_TRAIN), bool), features=rng.random((N_TRAIN, 8)).astype(np.float32),
                  deepfool=rng.random(N_TRAIN).astype(np.float32), labels=tr.labels,
                  tracked_epochs=np.array([1], np.int64))
    arrays["aign_l2"][0, 3] = arrays["features"][3, 0] = float(value)
    save_arrays(work / "runs/proxy/main/s0/dynamics.npz", arrays, {"fingerprint": tr.fingerprint, "n": N_TRAIN})
    for method in ("easycore", "moderate"):
        r = run_cli(["select", "-q", "--method", method, "--fraction", "0.5"], cwd=work)
        lines = error_lines(r.stderr)
        assert r.returncode in (0, 2) and len(lines) <= 1, r.stderr[-2000:]
        if r.returncode == 2:
            assert lines[0].startswith("easycore select: error: runs/proxy/main/s0/dynamics.npz: "), lines
            assert "non-finite" in lines[0] or "NaN" in lines[0], lines
            assert not (work / "runs/coresets/main" / f"{method}-0.5").exists()
    assert not (value == "nan" and r.returncode == 0)


REPORT_NB = '''# %% tags=["parameters"]
params_path = "params.yaml"
tables = "a"
fail = 0

# %%
import pandas as pd
from easycore import report
from easycore.config import load_params
P = load_params(params_path)
FIG, TAB = report.out_dirs(P, "tiny")
for t in str(tables).split(","):
    report.save_table(pd.DataFrame({"x": [t]}), t, out_dir=TAB)
report.save_json({"tables": tables}, f"{P.report.dir}/summary.json")

# %%
assert not fail, "late failure"
'''


@pytest.mark.slow
def test_report_outputs_are_all_or_nothing(tmp_path):
    """Issue 25 item 4: a notebook that fails in a late cell has replaced nothing (tables, summary.json); a
    successful run publishes exactly its own outputs (an earlier configuration's tables do not survive)."""
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks/tiny.py").write_text(REPORT_NB)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY))
    rep = tmp_path / "reports"
    tables = lambda: sorted(p.name for p in (rep / "tables/tiny").iterdir())  # noqa: E731

    assert _cli(["notebook", "-q", "tiny", "-p", "tables", "a"], tmp_path).returncode == 0
    first = {p: (rep / p).read_bytes() for p in ("tables/tiny/a.md", "summary.json", "notebooks/tiny_a.ipynb")}
    assert tables() == ["a.csv", "a.md"] and (rep / "figures/tiny").is_dir()

    r = _cli(["notebook", "-q", "tiny", "-p", "tables", "b", "-p", "fail", "1"], tmp_path)
    assert r.returncode == 2 and "late failure" in r.stderr
    assert tables() == ["a.csv", "a.md"] and {p: (rep / p).read_bytes() for p in first} == first
    assert not any(p.name.startswith(".staging") for p in rep.iterdir())

    (rep / ".staging-tiny/tables/tiny").mkdir(parents=True)           # what a SIGKILLed run leaves
    (rep / ".staging-tiny/tables/tiny/killed.md").write_text("half")
    assert _cli(["notebook", "-q", "tiny", "-p", "tables", "b"], tmp_path).returncode == 0
    assert tables() == ["b.csv", "b.md"]                              # a.* were the earlier configuration's
    assert json.loads((rep / "summary.json").read_text()) == {"tables": "b"}
    assert not any(p.name.startswith(".staging") for p in rep.iterdir())


PLOTS_NB = '''# %% tags=["parameters"]
params_path = "params.yaml"
value = 1.0
fail = 0

# %%
import pandas as pd
from easycore.report import plots
from easycore.config import load_params
P = load_params(params_path)
cv = pd.DataFrame({"mode": ["standard"], "method": ["random"], "fraction": [0.5], "eps_255": [0.0],
                   "robust_pct": [value], "lo_pct": [0.0], "hi_pct": [2 * value]})
rf = cv.drop(columns="eps_255")
plots.write_dvc_plots(cv, rf, pd.DataFrame(), f"{P.report.dir}/plots")

# %%
assert not fail, "late failure"
'''


@pytest.mark.slow
def test_dvc_plot_csvs_are_published_all_or_nothing(tmp_path):
    """Issue 34 item 3: `<report.dir>/plots/*.csv` (plots.write_dvc_plots, the coresets notebook) go through the
    notebook's staging like its tables: a notebook failing in a late cell leaves the published CSVs as they were."""
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks/tiny.py").write_text(PLOTS_NB)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY))
    plot_dir = tmp_path / "reports/plots"
    csvs = lambda: {p.name: p.read_text() for p in sorted(plot_dir.iterdir())}  # noqa: E731
    assert _cli(["notebook", "-q", "tiny", "-p", "value", "1"], tmp_path).returncode == 0
    first = csvs()
    assert sorted(first) == ["robust_vs_eps_standard.csv", "robust_vs_fraction_standard.csv"]
    r = _cli(["notebook", "-q", "tiny", "-p", "value", "7", "-p", "fail", "1"], tmp_path)
    assert r.returncode == 2 and "late failure" in r.stderr
    assert csvs() == first, "a failed notebook replaced the published plot CSVs"
    assert not any(p.name.startswith(".staging") for p in plot_dir.parent.iterdir())
    assert _cli(["notebook", "-q", "tiny", "-p", "value", "7"], tmp_path).returncode == 0
    assert csvs() != first and "7" in csvs()["robust_vs_eps_standard.csv"]


# ----------------------------------------------------------------------------- issue 25 item 1: `dvc repro -s`
@pytest.mark.slow
def test_dvc_repro_single_stage_runs_no_params_value(repo, tmp_path):
    """`dvc repro -s` skips `check`: after a passing check, a transfer model named 'x;touch PWNED;echo' reaches
    the proxy_transfer stage's command (which must not hand it to the shell): the stage fails with easycore's one
    line and no PWNED appears; `-f -s 'proxy_transfer@x;touch PWNED;echo'` names no stage (dvc.yaml's matrices
    expand matrix.yaml, which check wrote from the valid params), so nothing runs."""
    import dataclasses
    import shutil

    from conftest import REPO

    dvc = Path(sys.executable).with_name("dvc")
    if not dvc.exists():
        pytest.skip("dvc is not installed beside this Python")
    work = tmp_path / "w"
    work.mkdir()
    shutil.copy(REPO / "dvc.yaml", work / "dvc.yaml")
    shutil.copytree(repo / "data", work / "data")
    full = dataclasses.asdict(params_from_dict(TINY))          # every key dvc.yaml's templates read
    full["proxy"]["transfer_models"] = ["cnn_tiny"]
    (work / "params.yaml").write_text(yaml.safe_dump(full))
    env = sub_env(PATH=f"{dvc.parent}{os.pathsep}{os.environ.get('PATH', '')}", DVC_NO_ANALYTICS="1")
    run = lambda *a: subprocess.run(list(a), cwd=work, env=env, capture_output=True, text=True,  # noqa: E731
                                    timeout=300)
    assert run(str(dvc), "init", "--no-scm", "-q").returncode == 0
    r = run(sys.executable, "-m", "easycore", "check", "-q")
    assert r.returncode == 0, r.stderr[-2000:]                  # a passing check: runs/code/proxy.txt exists
    evil = "x;touch PWNED;echo"
    full["proxy"]["transfer_models"] = [evil]
    (work / "params.yaml").write_text(yaml.safe_dump(full))
    r = run(str(dvc), "repro", "-s", "proxy_transfer")       # proxy_transfer@cnn_tiny (matrix.yaml's list)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out[-3000:]
    assert not list(work.rglob("PWNED")) and not (tmp_path / "PWNED").exists(), "the shell ran a params value"
    assert "> easycore proxy -q --dvc\n" in out, out[-3000:]                  # the command line DVC ran
    errors = [ln for ln in out.splitlines() if ln.startswith("easycore proxy: error: ")]
    assert len(errors) == 1 and evil in errors[0] and "is not allowed" in errors[0], out[-3000:]
    assert not (work / "runs/proxy").exists()
    r = run(str(dvc), "repro", "-f", "-s", f"proxy_transfer@{evil}")  # not a stage: the matrix is matrix.yaml's
    assert r.returncode != 0 and "> easycore" not in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]
    assert not list(work.rglob("PWNED")) and not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("cmd,stage,needle", [
    ("train", None, "--dvc takes the run from $DVC_STAGE, which DVC sets for a stage's command; it is not set"),
    ("train", "train@main-random-0.5-standard;touch PWNED", "is not a run the params declare"),
    ("eval", "evaluate@main-random-0.5-trades", "is not a run the params declare"),
    ("select", "select@../..", "is not a run the params declare"),
    ("proxy", "proxy_transfer@../../x", "is not a run the params declare"),
    ("proxy", "proxy", "is not a matrix stage '<family>@<key>'"),
])
def test_dvc_stage_names_only_declared_runs(repo, monkeypatch, capsys, cmd, stage, needle):
    """`easycore <cmd> --dvc` (dvc.yaml's command lines) accepts only a $DVC_STAGE naming a declared run."""
    if stage is None:
        monkeypatch.delenv("DVC_STAGE", raising=False)
    else:
        monkeypatch.setenv("DVC_STAGE", stage)
    with chdir(repo):
        assert cli.main([cmd, "-q", "--dvc"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and len(error_lines(out.err)) == 1 and needle in out.err, out.err
    assert not (repo / "runs").exists()


# ----------------------------------------------------------------------------- issue 34 item 1: output paths
def _dvc_work(tmp_path: Path, params: dict, *, code: bool = False) -> tuple[Path, Callable]:
    """A DVC repository (no git) at tmp_path/outer/w with the repo's dvc.yaml, `params` (a full params dict) as
    params.yaml and its matrix.yaml (what `easycore check` writes); code: also a copy of easycore/ (the check
    stage's dependency). Returns (work, run) where run(*argv) runs a command there."""
    import shutil

    from conftest import REPO

    dvc = Path(sys.executable).with_name("dvc")
    if not dvc.exists():
        pytest.skip("dvc is not installed beside this Python")
    work = tmp_path / "outer" / "w"
    work.mkdir(parents=True)
    shutil.copy(REPO / "dvc.yaml", work / "dvc.yaml")
    if code:
        shutil.copytree(REPO / "easycore", work / "easycore", ignore=shutil.ignore_patterns("__pycache__"))
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    runs.write_matrix(params_from_dict(params), work / "matrix.yaml")
    env = sub_env(PATH=f"{dvc.parent}{os.pathsep}{os.environ.get('PATH', '')}", DVC_NO_ANALYTICS="1")

    def run(*argv):
        argv = [str(dvc), *argv[1:]] if argv[0] == "dvc" else list(argv)
        return subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=600)

    assert run("dvc", "init", "--no-scm", "-q").returncode == 0
    return work, run


# (family, params section and key holding the names, the stage DVC would expand for name v, its output path)
OUT_PATHS = [
    ("proxy_transfer", "proxy", "transfer_models", "proxy_transfer@{v}", "runs/proxy/{v}"),
    ("select_transfer", "proxy", "transfer_models", "select_transfer@{v}", "runs/coresets/{v}"),
    ("train", "coreset", "methods", "train@main-{v}-0.5-standard", "runs/train/main/{v}-0.5-standard"),
    ("train_survey", "coreset", "survey_methods", "train_survey@main-{v}-0.25-standard",
     "runs/train/main/{v}-0.25-standard"),
    ("train_transfer", "proxy", "transfer_models", "train_transfer@{v}-easycore-0.5-standard",
     "runs/train/{v}/easycore-0.5-standard"),
    ("train_full", "train", "modes", "train_full@none-full-1.0-{v}", "runs/train/none/full-1.0-{v}"),
    ("train_adaptive", "coreset", "adaptive", "train_adaptive@none-{v}-0.5-trades", "runs/train/none/{v}-0.5-trades"),
    ("evaluate", "coreset", "methods", "evaluate@main-{v}-0.5-standard", "runs/eval/main/{v}-0.5-standard"),
    ("evaluate_transfer", "proxy", "transfer_models", "evaluate_transfer@{v}-easycore-0.5-standard",
     "runs/eval/{v}/easycore-0.5-standard"),
    ("evaluate_full", "train", "modes", "evaluate_full@none-full-1.0-{v}", "runs/eval/none/full-1.0-{v}"),
]


def _escape(template: str) -> str:
    """A name that makes `template`'s path (relative to the repository) name a folder beside the repository."""
    parts = template.split("/")
    i = next(k for k, part in enumerate(parts) if "{v}" in part)
    return "x/" + "../" * (i + 2) + "victim"


@pytest.mark.slow
def test_dvc_removes_no_folder_a_params_name_points_at(tmp_path):
    """Issue 34 item 1: DVC removes a stage's outputs before its command runs, and dvc.yaml builds them from the
    matrix names. A name such as '../../../victim' in params.yaml (with `dvc repro -s`, which skips check) made DVC
    delete a folder outside the repository. The matrices now expand matrix.yaml (written by check from valid
    params): for every family, `dvc repro -s` / `-f -s` of the stage the bad name would give finds no such stage,
    and the folder it would have removed survives; a whole `dvc repro` stops at check. report.dir's outputs are
    persist (DVC never removes them): its folder survives too."""
    full = dataclasses.asdict(params_from_dict(TINY))
    full["proxy"]["transfer_models"] = ["cnn_tiny"]
    full["coreset"]["transfer_methods"] = ["easycore"]
    full["coreset"]["adaptive_fractions"] = [0.5]
    work, run = _dvc_work(tmp_path, full, code=True)
    r = run("dvc", "stage", "list", "--name-only")
    names = set(r.stdout.split())
    assert {"proxy_transfer@cnn_tiny", "train@main-easycore-0.5-standard"} <= names, r.stderr
    for family, section, key, stage, out in OUT_PATHS:
        evil = _escape(out)
        victim = Path(os.path.normpath(work / out.format(v=evil)))
        assert not victim.is_relative_to(work), victim
        victim.mkdir(parents=True, exist_ok=True)
        (victim / "keep.txt").write_text(family)
        bad = yaml.safe_load(yaml.safe_dump(full))
        bad[section][key] = bad[section][key] + [evil]
        if family == "train_survey":
            bad["coreset"]["survey_fractions"] = [0.25]
        (work / "params.yaml").write_text(yaml.safe_dump(bad))
        for argv in (["repro", "-s", stage.format(v=evil)], ["repro", "-f", "-s", stage.format(v=evil)]):
            r = run("dvc", *argv)
            assert r.returncode != 0 and "Running stage" not in r.stdout, (family, r.stdout + r.stderr)
            assert (victim / "keep.txt").read_text() == family, f"{family}: DVC removed {victim}"
    r = run("dvc", "repro")                                     # the last bad params: check refuses them
    assert r.returncode != 0 and re.findall(r"^Running stage '([^']+)'", r.stdout, re.M) == ["check"], r.stdout
    assert "easycore check: error: params: " in r.stdout + r.stderr
    assert all((Path(os.path.normpath(work / out.format(v=_escape(out)))) / "keep.txt").exists()
               for *_, out in OUT_PATHS)
    victim = tmp_path / "outer" / "report-victim"                # report.dir outside: persist outputs
    (victim / "plots").mkdir(parents=True)
    (victim / "plots/keep.txt").write_text("report")
    bad = yaml.safe_load(yaml.safe_dump(full))
    bad["report"]["dir"] = "../report-victim"
    (work / "params.yaml").write_text(yaml.safe_dump(bad))
    r = run("dvc", "repro", "-f", "-s", "report_coresets")
    assert r.returncode != 0 and (victim / "plots/keep.txt").read_text() == "report", r.stdout + r.stderr


@pytest.mark.slow
def test_matrix_yaml_follows_the_params_and_stage_commands_refuse_another(tmp_path, monkeypatch, capsys):
    """The check stage rewrites matrix.yaml when params declare other runs and, as a DVC stage (DVC expanded the
    old lists), stops with one line; run by hand it just writes it. A `--dvc` stage command of a declared run
    refuses while matrix.yaml is not the params' (`dvc repro -s` skips check)."""
    from conftest import REPO

    assert (REPO / "matrix.yaml").read_text() == runs.matrix_text(load_params(REPO / "params.yaml")), \
        "matrix.yaml is not params.yaml's: run `easycore check`"
    p = yaml.safe_load(yaml.safe_dump(TINY))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_STAGE", raising=False)
    assert cli.main(["check", "-q"]) == 0 and (tmp_path / "matrix.yaml").exists()
    first = (tmp_path / "matrix.yaml").read_text()
    assert cli.main(["check", "-q"]) == 0 and (tmp_path / "matrix.yaml").read_text() == first   # unchanged
    p["coreset"]["methods"] = ["random", "easycore", "hard"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    monkeypatch.setenv("DVC_STAGE", "train@main-hard-0.5-standard")   # (hand-run stage command, before check)
    capsys.readouterr()
    assert cli.main(["train", "-q", "--dvc"]) == 2
    err = capsys.readouterr().err
    assert len(error_lines(err)) == 1 and "matrix.yaml (the runs dvc.yaml expands) is not the one" in err, err
    monkeypatch.setenv("DVC_STAGE", "check")
    assert cli.main(["check", "-q"]) == 2
    err = capsys.readouterr().err
    assert len(error_lines(err)) == 1 and "matrix.yaml is rewritten: run `dvc repro` again" in err, err
    assert "hard" in (tmp_path / "matrix.yaml").read_text()
    assert cli.main(["check", "-q"]) == 0                           # the next `dvc repro`: lists agree


# ----------------------------------------------------------------------------- issue 34 item 2: forced single stage
@pytest.mark.slow
def test_forced_single_stage_with_edited_params_locks_nothing(tmp_path):
    """Issue 34 item 2: edit train.epochs, `dvc repro -f -s train_full@...` (check skipped: runs/params/train.json
    still holds the old value), revert params.yaml, `dvc repro`: the model trained with the edited value stayed
    locked under the old params. The stage command now refuses (one line naming the key) before training; after
    the revert `dvc repro` gives back the model of the recorded params, byte for byte."""
    import hashlib

    full = dataclasses.asdict(params_from_dict(TINY))
    work, run = _dvc_work(tmp_path, full, code=True)
    stage = "train_full@none-full-1.0-standard"
    model = work / "runs/train/none/full-1.0-standard/s0/model.safetensors"
    r = run("dvc", "repro", stage)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    digest = lambda: hashlib.sha256(model.read_bytes()).hexdigest()  # noqa: E731
    first, recorded = digest(), (work / "runs/params/train.json").read_text()
    lock = (work / "dvc.lock").read_text()
    edited = yaml.safe_load(yaml.safe_dump(full))
    edited["train"]["epochs"] = 3
    (work / "params.yaml").write_text(yaml.safe_dump(edited))
    r = run("dvc", "repro", "-f", "-s", stage)
    out = r.stdout + r.stderr
    errors = [ln for ln in out.splitlines() if ln.startswith("easycore train: error: ")]
    assert r.returncode != 0 and len(errors) == 1, out[-3000:]
    assert "train.epochs 3 (recorded: 1)" in errors[0] and "runs/params/train.json" in errors[0], errors
    assert "epoch 1/3" not in out                                   # refused before training
    assert (work / "dvc.lock").read_text() == lock                  # nothing locked under the old params
    (work / "params.yaml").write_text(yaml.safe_dump(full))        # revert
    r = run("dvc", "repro", stage)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert digest() == first and (work / "runs/params/train.json").read_text() == recorded
    st = run("dvc", "status", "--json", stage)
    from easycore.data.sources import status_clean
    assert status_clean(st.stdout), st.stdout


def test_every_many_run_family_refuses_params_other_than_recorded(tmp_path, monkeypatch, capsys):
    """The select, train, train_adaptive and eval stage commands each check their own runs/params/<family>.json."""
    p = yaml.safe_load(yaml.safe_dump(TINY))
    p["coreset"].update(adaptive=["acs_craig"], adaptive_modes=["standard"])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_STAGE", raising=False)
    assert cli.main(["check", "-q"]) == 0
    for cmd, stage, key, value, family in [
            ("select", "select@main", ("coreset", "p"), "inf", "select"),
            ("train", "train@main-random-0.5-standard", ("train", "epochs"), 4, "train"),
            ("train", "train_adaptive@none-acs_craig-0.5-standard", ("coreset", "acs"), {"every": 3}, "train_adaptive"),
            ("eval", "evaluate_full@none-full-1.0-standard", ("eval", "pgd_steps"), 3, "eval")]:
        q = yaml.safe_load(yaml.safe_dump(p))
        q[key[0]][key[1]] = value if not isinstance(value, dict) else {**q[key[0]].get(key[1], {}), **value}
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(q))
        monkeypatch.setenv("DVC_STAGE", stage)
        capsys.readouterr()
        assert cli.main([cmd, "-q", "--dvc"]) == 2, stage
        err = capsys.readouterr().err
        assert len(error_lines(err)) == 1 and f"differs from runs/params/{family}.json" in err, (stage, err)
        assert ".".join(key) in err, err
    assert not any((tmp_path / "runs" / d).exists() for d in ("coresets", "train", "eval"))


# ----------------------------------------------------------------------------- issue 34 item 4: symlinked folders
def test_data_identity_follows_symlinked_class_folders(tmp_path, monkeypatch):
    """Issue 34 item 4: a class folder of an ImageFolder copy that is a symbolic link is read by prepare
    (torchvision walks with followlinks=True) and is now hashed by the data_source stage too: the identity equals
    the plain copy's, and editing an image behind the link changes it (so `dvc repro` re-runs prepare). A link
    back to a folder above it is one DataError."""
    import shutil

    from _reliability import make_image_folder
    from easycore.data import sources
    from easycore.data.loaders import DATASETS
    from easycore.data.base import DataError

    monkeypatch.setenv("EASYCORE_CACHE", str(tmp_path / "cache"))
    src = DATASETS.get("cifar10").sources
    plain, linked = tmp_path / "plain", tmp_path / "linked"
    make_image_folder(plain / "cifar10-jpeg")
    shutil.copytree(plain, linked)
    shutil.move(linked / "cifar10-jpeg/train/dog", tmp_path / "elsewhere-dog")
    (linked / "cifar10-jpeg/train/dog").symlink_to(tmp_path / "elsewhere-dog", target_is_directory=True)
    want = sources.identity(plain, src(plain))
    got = sources.identity(linked, src(linked))
    assert got == want and got["files"] == 10, (got, want)
    img = tmp_path / "elsewhere-dog/0001.png"
    data = bytearray(img.read_bytes())
    data[-20] ^= 1
    img.write_bytes(bytes(data))                                  # an image behind the link, same size
    assert sources.identity(linked, src(linked))["sha256"] != want["sha256"]
    (linked / "cifar10-jpeg/train/cat/loop").symlink_to(linked / "cifar10-jpeg/train", target_is_directory=True)
    with pytest.raises(DataError, match="a symlink loop"):
        sources.identity(linked, src(linked))


# ----------------------------------------------------------------------------- issue 34 item 6: the library API
@pytest.mark.parametrize("call,needle", [
    (lambda ec: ec.select([], 0.1), "scores must be a non-empty 1-D array"),
    (lambda ec: ec.select(np.arange(20.0), 0.01), "fraction 0.01 of 20 samples keeps none"),
    (lambda ec: ec.select(np.arange(20.0), 0.5, labels=np.arange(20) * 0.1 + 0.05, balanced=True),
     "labels must be integer class indices, got dtype float64"),
    (lambda ec: ec.select(np.arange(20.0), 0.5, labels=np.arange(19), balanced=True), "labels must have shape (20,)"),
], ids=["empty", "tiny_fraction", "float_labels", "short_labels"])
def test_api_select_refuses_what_selects_nothing_meaningful(call, needle):
    """Issue 34 item 6: easycore.api.select returned [] on empty data or a fraction whose budget rounds to 0, and
    silently mis-selected with non-integer labels (each a class, or matching none: [] with balanced=True)."""
    import easycore.api as ec

    with pytest.raises(ValueError, match=re.escape(needle)):
        call(ec)
    kept = ec.select(np.arange(20.0), 0.5, labels=np.repeat([0.0, 1.0], 10), balanced=True)   # integral floats
    assert len(kept) == 10 and sorted(kept) == [0, 1, 2, 3, 4, 10, 11, 12, 13, 14]


def _api_model_and_data(n=12):
    from torch.utils.data import TensorDataset

    torch.manual_seed(0)
    x, y = torch.rand(n, 3, 8, 8), torch.arange(n) % 3
    return build_model("cnn_tiny", 3, 3, (0.5,) * 3, (0.25,) * 3), TensorDataset(x, y), x, y


def test_api_recorder_names_nan_gradients_bad_positions_and_a_shuffled_loader():
    """Issue 34 item 6: NaN input gradients were reported as "samples got no batch() record" (inline) or as an
    incomplete loader (exact); a negative position wrapped to the end; a shuffled scoring loader yielding (x, y)
    silently put every score on another sample."""
    import easycore.api as ec
    from torch.utils.data import DataLoader, SubsetRandomSampler

    model, ds, x, y = _api_model_and_data()
    rec = ec.AIGNRecorder(n=12, mode="inline")
    rec.batch(range(12), torch.full((12, 3, 8, 8), float("nan")))
    with pytest.raises(ValueError, match=r"12 of 12 samples have NaN or inf input gradients \(positions \[0, 1, 2"):
        rec.end_epoch()
    rec = ec.AIGNRecorder(n=12, mode="inline")
    rec.batch(range(11), torch.ones(11, 3, 8, 8))
    with pytest.raises(ValueError, match="1 of 12 samples got no batch"):                 # still said when true
        rec.end_epoch()
    rec = ec.AIGNRecorder(n=12, mode="inline")
    with pytest.raises(ValueError, match=r"positions outside \[0, 12\) \(min -1"):
        rec.batch([-1, 0, 1], torch.ones(3, 3, 8, 8))
    with pytest.raises(ValueError, match="idx must be 3 integer positions"):
        rec.batch([0, 1], torch.ones(3, 3, 8, 8))

    rec = ec.AIGNRecorder(n=12)
    with pytest.raises(ValueError, match=r"shuffles \(DataLoader\(shuffle=True\)\) and yields no positions"):
        rec.end_epoch(model, DataLoader(ds, batch_size=4, shuffle=True))
    with pytest.warns(UserWarning, match="uses a SubsetRandomSampler and yields no positions"):
        with pytest.raises(ValueError, match="labels"):
            ec.AIGNRecorder(n=12, labels=y.numpy()).end_epoch(
                model, DataLoader(ds, batch_size=4, sampler=SubsetRandomSampler(range(12))))
    with torch.no_grad():
        model.fc.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match="12 of 12 samples have NaN or inf input gradients"):
        ec.AIGNRecorder(n=12).end_epoch(model, DataLoader(ds, batch_size=4))


# ----------------------------------------------------------------------------- issue 34 item 7: smaller cases
def test_outcomes_robust_where_clean_is_wrong_are_refused(tmp_path):
    """Issue 34 item 7: an outcome file where an image is robust (correct under attack) but not clean was
    accepted; every attacked outcome implies the clean one (evaluate.py), in a run's outcomes.npz and in an
    exported outcomes file alike."""
    from easycore.store import ArtifactError

    clean = np.arange(20) % 2 == 0
    robust = clean.copy()
    robust[1] = True                                              # robust, yet wrong on the clean image
    run = runs.Run("main", "easycore", 0.5, "standard", 0)
    d = run.eval_dir(tmp_path)
    d.mkdir(parents=True)
    write_json(d / "metrics.json", {"clean": {"accuracy": 0.5, "n": 20}})
    save_arrays(d / "outcomes.npz", {"clean": clean, "robust": robust}, {"fingerprint": "fp", "n": 20})
    r = report.load_run(run, tmp_path, fingerprint="fp")
    assert not r.ok and "'robust' count 1 images as correct that 'clean' counts as wrong" in r.status, r.status
    res = [report.RunResult(run, "ok", {}, {"clean": clean, "robust": robust})]
    path = report.export_outcomes(res, tmp_path / "o.npz", autoattack_root=None)
    with pytest.raises(ArtifactError, match="o.npz: outcomes 'robust' count 1 images as correct"):
        report.read_outcomes(path)
    res[0].outcomes["robust"] = clean & (np.arange(20) % 4 == 0)  # a subset of clean: fine
    back, _ = report.read_outcomes(report.export_outcomes(res, tmp_path / "ok.npz", autoattack_root=None))
    np.testing.assert_array_equal(back[0].outcomes["robust"], res[0].outcomes["robust"])


def test_a_comment_only_edit_re_runs_no_report(tmp_path, monkeypatch):
    """Issue 34 item 7: the six report stages depended on the whole easycore/ folder, so a comment-only edit
    re-ran every notebook. They depend on runs/code/notebook.txt: the AST hashes of every module the notebook
    command and the notebooks' kernels can import. A comment or docstring edit leaves it byte-identical; a code
    edit of a module a notebook imports changes it."""
    import shutil

    from conftest import REPO
    from easycore.pipeline import deps

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    reports = {n: st for n, st in stages.items() if st["cmd"].startswith("easycore notebook")}
    assert len(reports) == 6 and "runs/code/notebook.txt" in stages["check"]["outs"]
    for name, st in reports.items():
        assert "easycore" not in st["deps"] and "runs/code/notebook.txt" in st["deps"], name
    pkg = tmp_path / "easycore"
    shutil.copytree(REPO / "easycore", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "notebooks", tmp_path / "notebooks")
    monkeypatch.setattr(deps, "PKG", pkg)
    monkeypatch.chdir(tmp_path)
    assert {"easycore.report.plots", "easycore.report.headline", "easycore.report.verdict"} <= deps.command_closure("notebook")
    before = deps.manifest("notebook")
    src = (pkg / "report" / "plots.py").read_text()
    commented = src.replace("    from pathlib import Path\n", "    # another comment\n    from pathlib import Path\n", 1)
    assert commented != src
    (pkg / "report" / "plots.py").write_text("# a comment\n" + commented)
    assert deps.manifest("notebook") == before
    (pkg / "report" / "plots.py").write_text(src + "\nX = 1\n")
    assert deps.manifest("notebook") != before


def test_global_batchnorm_with_one_value_per_channel_raises_as_batchnorm(monkeypatch):
    """Issue 34 item 7: GlobalBatchNorm (runtime.sync_bn on CPU) given one value per channel over all ranks
    returned its bias (variance 0), where BatchNorm raises. Here one rank in a faked process group (the sum over
    the ranks is the rank's own): it raises BatchNorm's error; two values per channel train as BatchNorm does."""
    import torch.nn as nn

    from easycore.core import syncbn

    monkeypatch.setattr(syncbn.dist, "active", lambda: True)
    monkeypatch.setattr(syncbn.dist, "world", lambda: 1)
    monkeypatch.setattr(syncbn._AllReduceSum, "apply", staticmethod(lambda t: t))
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(4).train()
    with torch.no_grad():
        bn.bias.fill_(0.5)
    gbn = syncbn.convert(bn).train()
    assert isinstance(gbn, syncbn.GlobalBatchNorm)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        nn.BatchNorm1d(4).train()(torch.randn(1, 4))
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        gbn(torch.randn(1, 4))
    x = torch.randn(2, 4)
    ref = nn.BatchNorm1d(4).train()
    with torch.no_grad():
        ref.bias.fill_(0.5)
    torch.testing.assert_close(gbn(x), ref(x))


def test_checkpoints_a_run_cache_restore_leaves_are_removed(tmp_path, monkeypatch):
    """Issue 34 item 7: a stage restored by DVC from its run-cache runs no command, so the checkpoints an earlier,
    interrupted run of it left stayed forever. The data_source stage (first on every `dvc repro`) removes the
    checkpoints (and AIGN records) of runs whose group is complete and whose model is newer; a group killed mid-way
    (a model missing) keeps them, and so does a checkpoint newer than its run's model."""
    from easycore.data import sources

    p = yaml.safe_load(yaml.safe_dump(TINY))
    p["train"]["seeds"] = [0, 1]
    params = params_from_dict(p)
    monkeypatch.chdir(tmp_path)
    groups = list(runs.expected_groups(params).items())
    (done_g, done), (half_g, half) = groups[0], groups[1]

    def make(state: Path, run_dir: Optional[Path], age_s: int) -> None:
        state.parent.mkdir(parents=True, exist_ok=True)
        state.write_bytes(b"checkpoint")
        state.with_suffix(".records").mkdir(exist_ok=True)
        if run_dir is not None:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "model.safetensors").write_bytes(b"model")
        st = state.stat()
        os.utime(state, ns=(st.st_atime_ns, st.st_mtime_ns - age_s * 10**9))

    for r in done:                                            # restored group: every model, newer
        make(r.state_path(), r.train_dir(), 10)
    make(half[0].state_path(), half[0].train_dir(), 10)       # killed mid-way: s1 has no model
    make(half[1].state_path(), None, 10)
    make(runs.proxy_state("main", 0), runs.proxy_dir("main", 0), 10)
    make(runs.proxy_state("main", 1), runs.proxy_dir("main", 1), -10)   # newer than its model: kept
    keep = [half[0].state_path(), half[1].state_path(), runs.proxy_state("main", 1)]
    gone = [r.state_path() for r in done] + [runs.proxy_state("main", 0)]
    assert sorted(runs.stale_states(params)) == sorted(gone)
    datasource.stage(params, Path("runs/data/source.json"))
    assert not any(s.exists() or s.with_suffix(".records").exists() for s in gone)
    assert all(s.exists() and s.with_suffix(".records").exists() for s in keep)


# ----------------------------------------------------------------------------- issue 25 item 10: EASYCORE_DATA
@pytest.mark.slow
def test_dvc_sees_where_easycore_data_points(tmp_path):
    """DVC cannot observe EASYCORE_DATA; the always-changed data_source stage makes `dvc repro` see the files it
    points at: a byte-identical copy in another folder re-runs nothing, other files re-run prepare (another
    fingerprint), and `dvc status` lists nothing but data_source afterwards."""
    import dataclasses
    import shutil

    from _reliability import make_image_folder, png_bytes
    from conftest import REPO
    from easycore.data.sources import status_clean

    dvc = Path(sys.executable).with_name("dvc")
    if not dvc.exists():
        pytest.skip("dvc is not installed beside this Python")
    data = {k: tmp_path / k for k in ("a", "copy", "other")}
    make_image_folder(data["a"] / "cifar10-jpeg", n_train=3, n_test=2)
    shutil.copytree(data["a"], data["copy"])
    shutil.copytree(data["a"], data["other"])
    (data["other"] / "cifar10-jpeg/train/dog/0001.png").write_bytes(png_bytes(99))
    work = tmp_path / "w"
    work.mkdir()
    shutil.copy(REPO / "dvc.yaml", work / "dvc.yaml")
    shutil.copytree(REPO / "easycore", work / "easycore", ignore=shutil.ignore_patterns("__pycache__"))  # check's dep
    full = dataclasses.asdict(params_from_dict({**TINY, "data": {"dataset": "cifar10", "root": "nowhere",
                                                                "n_per_class": 3, "test_n_per_class": 2}}))
    (work / "params.yaml").write_text(yaml.safe_dump(full))
    runs.write_matrix(params_from_dict(full), work / "matrix.yaml")   # what `easycore check` writes
    path = f"{dvc.parent}{os.pathsep}{os.environ.get('PATH', '')}"

    def repro(where: str) -> tuple[set, str]:
        env = sub_env(PATH=path, DVC_NO_ANALYTICS="1", EASYCORE_DATA=str(data[where]),
                      EASYCORE_CACHE=str(tmp_path / "cache"))
        r = subprocess.run([str(dvc), "repro", "prepare"], cwd=work, env=env, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
        st = subprocess.run([str(dvc), "status", "--json", "prepare"], cwd=work, env=env, capture_output=True, text=True)
        assert status_clean(st.stdout), st.stdout
        fp = json.loads((work / "data/prepared/info.json").read_text())["train"]["fingerprint"]
        return set(re.findall(r"^Running stage '([^']+)'", r.stdout, re.M)), fp

    assert subprocess.run([str(dvc), "init", "--no-scm", "-q"], cwd=work, env=sub_env()).returncode == 0
    ran, first = repro("a")
    assert ran == {"check", "data_source", "prepare"}
    ran, same = repro("copy")
    assert ran == {"data_source"} and same == first          # the same files elsewhere: nothing to redo
    ran, other = repro("other")
    assert ran == {"data_source", "prepare"} and other != first
