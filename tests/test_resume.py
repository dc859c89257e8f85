"""Kill -9 / Ctrl-C / corrupt or foreign checkpoints: a resumed run ends bit-identical to an uninterrupted one."""
from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from _reliability import history_core, one_thread, run_train_script, sub_env, train_tiny, weights_equal
from easycore.pipeline import stages as pipeline, runs
from easycore.store import load_state, load_tensors
from easycore.config import params_from_dict

EPOCHS, N_PER_CLASS, BATCH = 3, 4, 8          # 40 samples -> 5 batches per epoch (last batch index 4)
BASE = dict(n_per_class=N_PER_CLASS, epochs=EPOCHS, batch_size=BATCH, lr=0.05, seed=0, tracker=None)
_REFS: dict = {}


def reference(tracker=None, **changes) -> dict:
    """An uninterrupted run without checkpoint (cached per settings)."""
    key = (tracker, tuple(sorted(changes.items())))
    if key not in _REFS:
        _REFS[key] = train_tiny(dict(BASE, tracker=tracker, state=None, **changes))
    return _REFS[key]


def assert_same_run(got: dict, ref: dict) -> None:
    assert weights_equal(got["model"], ref["model"]) == [], "weights differ from the uninterrupted run"
    assert history_core(got["history"]) == history_core(ref["history"])
    if ref["tracker"] is not None:
        assert got["tracked"] == ref["tracked"]
        assert got["tracker"].keys() == ref["tracker"].keys()
        for k in ref["tracker"]:
            np.testing.assert_array_equal(got["tracker"][k], ref["tracker"][k], err_msg=k)


def temp_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


# ----------------------------------------------------------------------------- SIGKILL
@pytest.mark.parametrize("kill_at,tracker", [("1:0", None), ("2:3", None), (f"{EPOCHS}:4", None), ("2:1", "both")],
                         ids=["1:0", "2:3", "3:last", "2:1-aign-both"])
def test_kill_then_resume_is_bit_identical(tmp_path, kill_at, tracker):
    state, out = tmp_path / ".run.state.pt", tmp_path / "out.pt"
    args = dict(BASE, tracker=tracker, state=str(state), out=str(out))
    r = run_train_script(tmp_path, args, kill_at=kill_at)
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr[-2000:])
    assert not out.exists()
    killed_epoch = int(kill_at.split(":")[0])
    done = killed_epoch - 1                       # complete epochs before the kill
    if done == 0:
        assert not state.exists()
    else:
        st = load_state(state)
        assert st["epoch"] == done and len(st["history"]) == done
        if tracker:
            assert st["callbacks"]["aign"]["tracked_epochs"] == list(range(done))
    assert temp_leftovers(tmp_path) == []

    # re-run (no kill hook) in a fresh train() call: continues from the checkpoint
    got = train_tiny(dict(args, out=None))
    assert got["epochs_run"] == EPOCHS - done
    assert_same_run(got, reference(tracker))


# ----------------------------------------------------------------------------- bad checkpoints
@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage"])
def test_corrupt_checkpoint_is_not_loaded(tmp_path, caplog, damage):
    state = tmp_path / ".run.state.pt"
    args = dict(BASE, epochs=2, state=str(state))
    first = train_tiny(args)                       # leaves a complete checkpoint (epoch 2 of 2)
    assert first["epochs_run"] == 2 and state.exists()
    data = state.read_bytes()
    state.write_bytes({"truncate": data[: len(data) // 2], "empty": b"", "garbage": b"not a checkpoint" * 10}[damage])
    with caplog.at_level(logging.WARNING, logger="easycore.core.train"):
        got = train_tiny(args)
    assert got["epochs_run"] == 2, "a damaged checkpoint must not be resumed"
    assert "ignoring unreadable checkpoint" in caplog.text and str(state) in caplog.text
    assert weights_equal(got["model"], first["model"]) == []
    # the fresh run rewrote a good checkpoint: a third call has nothing left to do
    assert train_tiny(args)["epochs_run"] == 0


def test_complete_checkpoint_resumes_to_the_end(tmp_path):
    args = dict(BASE, state=str(tmp_path / ".s.pt"))
    first = train_tiny(args)
    again = train_tiny(args)
    assert first["epochs_run"] == EPOCHS and again["epochs_run"] == 0
    assert_same_run(again, reference())
    assert_same_run(first, reference())


@pytest.mark.parametrize("change", [{"lr": 0.02}, {"data_seed": 1}, {"seed": 1}, {"tracker": "exact"}],
                         ids=["lr", "data", "seed", "tracker"])
def test_checkpoint_from_other_settings_is_ignored(tmp_path, caplog, change):
    state = tmp_path / ".s.pt"
    train_tiny(dict(BASE, epochs=2, state=str(state)))          # a complete checkpoint for other settings
    # same epochs as the checkpoint (2): were it wrongly accepted, nothing would be trained
    with caplog.at_level(logging.WARNING, logger="easycore.core.train"):
        got = train_tiny(dict(BASE, epochs=2, state=str(state), **change))
    assert got["epochs_run"] == 2
    assert "other settings, data or code" in caplog.text
    if "lr" in change:
        assert_same_run(got, reference(epochs=2, lr=change["lr"]))


# ----------------------------------------------------------------------------- Ctrl-C through the CLI
def test_ctrl_c_saves_last_epoch_and_resumes(tmp_path):
    spec = {"data": {"dataset": "synthetic", "n_per_class": 20, "test_n_per_class": 2},
            "runtime": {"device": "cpu"},
            "train": {"model": "cnn_tiny", "epochs": 4, "batch_size": 10,
                      "optim": {"lr": 0.05}}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(spec))
    params = params_from_dict(spec)
    pipeline.prepare(params, tmp_path / "prepared")
    out = tmp_path / "runs" / "train" / "x"
    state = runs.state_path_for(out)
    cmd = [sys.executable, "-m", "easycore", "train", "--params", "p.yaml", "--mode", "standard", "--seed", "0",
           "--full", "--out", str(out), "--prepared", "prepared", "-q"]
    # SIGINT at its default in the child: a test runner started in the background (`cmd &` in a script) ignores
    # SIGINT, and an ignored SIGINT is inherited through exec, so the child would never see the Ctrl-C
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=sub_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not state.exists():                   # epoch 1 is complete and saved
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
        time.sleep(0.2)                             # into epoch 2
        assert proc.poll() is None, "the run ended before it could be interrupted; make it longer"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert "interrupted" in last and "resume" in last, last
    assert "Traceback" not in err
    st = load_state(state)
    k = st["epoch"]
    assert 1 <= k < 4 and len(st["history"]) == k
    assert f"interrupted during epoch {k + 1}" in err, err[-2000:]
    assert not (out / "model.safetensors").exists()
    assert temp_leftovers(state.parent) == []

    r = subprocess.run(cmd, cwd=tmp_path, env=sub_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"after epoch {k}/4" in r.stderr and "resumed from" in r.stderr
    assert (out / "model.safetensors").exists() and not state.exists()
    resumed = load_tensors(out / "model.safetensors")

    # an uninterrupted run of the same command, in this process on one thread, gives the same weights
    with one_thread():
        pipeline.train_run(params, tmp_path / "ref", mode="standard", seed=0, prepared=tmp_path / "prepared",
                           progress=False)
    ref = load_tensors(tmp_path / "ref" / "model.safetensors")
    assert weights_equal(resumed[0], ref[0]) == []
    assert resumed[1]["fingerprint"] == ref[1]["fingerprint"]
