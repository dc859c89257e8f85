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
from easycore import cli, pipeline, report, runs
from easycore import train as train_mod
from easycore.config import params_from_dict
from easycore.models import build_model
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
    return make


def _evil_prepared(s: Path, repo: Path) -> None:
    prep = s / "prep"
    prep.mkdir()
    for f in ("test.safetensors", "info.json"):
        (prep / f).write_bytes((repo / "data/prepared" / f).read_bytes())
    evil_torch_zip(prep / "train.safetensors", s / "PWNED")


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
    Case("train_evil_prepared", TRAIN + ["--full", "--prepared", "{S}/prep"],
         ("{S}/prep/train.safetensors is corrupt or truncated",), _evil_prepared),
    Case("train_truncated_indices", TRAIN + ["--indices", "{S}/indices.npy"],
         ("{S}/indices.npy", "corrupt or truncated"), _indices("truncated")),
    Case("train_object_indices", TRAIN + ["--indices", "{S}/indices.npy"],
         ("refusing to load {S}/indices.npy: an object array",), _indices("object")),
    Case("train_float_indices", TRAIN + ["--indices", "{S}/indices.npy"],
         ("{S}/indices.npy: indices must be integers, got dtype float64",), _indices("float")),
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

    from easycore import evaluate
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
