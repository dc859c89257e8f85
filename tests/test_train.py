"""The training loop: it learns, schedules behave, and an interrupted run resumes to bit-identical weights."""
import pytest
import torch

from easycore.core.aign import AIGNTracker
from easycore.store import load_state
from easycore.config import OptimConfig, TrainConfig
from easycore.data.loaders import load_dataset
from easycore.core.train import Callback, lr_factor, train


@pytest.fixture(scope="module")
def ds():
    return load_dataset("synthetic", "train", ".", n_per_class=24, seed=0)


def small_cfg(**kw):
    base = dict(model="cnn_tiny", epochs=3, batch_size=32, optim=OptimConfig(lr=0.05, schedule="onecycle"))
    base.update(kw)
    return TrainConfig(**base)


def test_training_reduces_loss(ds):
    res = train(small_cfg(epochs=4), ds, progress=False)
    losses = [h["loss"] for h in res.history]
    print("loss per epoch:", [round(v, 3) for v in losses])
    assert losses[-1] < 0.8 * losses[0]
    assert res.history[-1]["train_acc"] > 0.3


@pytest.mark.parametrize("schedule", ["multistep", "cosine", "onecycle", "constant"])
def test_schedules(schedule):
    cfg = OptimConfig(schedule=schedule, milestones=[0.5, 0.75], gamma=0.1, warmup=0.2)
    f = [lr_factor(cfg, s, 100) for s in range(100)]
    assert all(0 <= v <= 1 + 1e-12 for v in f)
    if schedule == "multistep":
        assert f[0] == 1 and abs(f[60] - 0.1) < 1e-12 and abs(f[80] - 0.01) < 1e-12
    if schedule in ("cosine", "onecycle"):
        assert f[-1] < 0.05 and max(f) == pytest.approx(1.0, abs=0.02)


class Stop(Exception):
    pass


def test_resume_is_bit_identical(ds, tmp_path):
    cfg = small_cfg()
    ref_tracker = AIGNTracker(n=len(ds), mode="exact", epochs=cfg.epochs)
    ref = train(cfg, ds, seed=5, tracker=ref_tracker, progress=False)

    class Crash(Callback):
        def after_backward(self, loop, x, y, idx, out):
            if loop.epoch == 2:
                raise Stop

    state = tmp_path / "state.pt"
    with pytest.raises(Stop):
        train(cfg, ds, seed=5, state_path=state, tracker=AIGNTracker(n=len(ds), mode="exact", epochs=cfg.epochs),
              callbacks=[Crash()], progress=False)
    assert load_state(state)["epoch"] == 2
    tracker = AIGNTracker(n=len(ds), mode="exact", epochs=cfg.epochs)
    res = train(cfg, ds, seed=5, state_path=state, tracker=tracker, progress=False)
    assert res.epochs_run == 1
    for (k, a), b in zip(ref.model.state_dict().items(), res.model.state_dict().values()):
        assert torch.equal(a, b), f"{k} differs after resume"
    for k, m in ref_tracker.matrices().items():
        assert (m == tracker.matrices()[k]).all(), k


def test_other_seed_gives_other_weights(ds):
    a = train(small_cfg(epochs=1), ds, seed=0, progress=False).model.state_dict()
    b = train(small_cfg(epochs=1), ds, seed=1, progress=False).model.state_dict()
    assert not all(torch.equal(a[k], b[k]) for k in a)


def test_cpu_bf16_autocasts_the_cpu_steps_only_when_asked(ds):
    """runtime.cpu_bf16: the training forward (and the attack's) runs in bf16 on the CPU; off by default, where the
    run is fp32 (the default's weights differ from the bf16 run's, and both learn)."""
    from easycore.config import AttackConfig, RuntimeConfig
    from easycore.core.runtime import use_amp

    cpu = torch.device("cpu")
    assert not use_amp(RuntimeConfig(device="cpu"), cpu) and use_amp(RuntimeConfig(device="cpu", cpu_bf16=True), cpu)
    seen = []

    class Probe(Callback):                     # the dtype a convolution computes in
        hooked = None

        def before_batch(self, loop, x, y, idx):
            if self.hooked is None:
                conv = next(m for m in loop.model.modules() if isinstance(m, torch.nn.Conv2d))
                self.hooked = conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))

    cfg = small_cfg(epochs=1, attack=AttackConfig(steps=1))
    fp32 = train(cfg, ds, mode="trades", runtime=RuntimeConfig(device="cpu"), callbacks=[Probe()], progress=False)
    assert set(seen) == {torch.float32}
    seen.clear()
    bf16 = train(cfg, ds, mode="trades", runtime=RuntimeConfig(device="cpu", cpu_bf16=True), callbacks=[Probe()],
                 progress=False)
    assert set(seen) == {torch.bfloat16}
    a, b = fp32.model.state_dict(), bf16.model.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)
    assert all(torch.isfinite(v).all() for v in b.values() if v.is_floating_point())


def test_cpu_bf16_without_a_fast_path_is_warned_once_and_by_check(monkeypatch, tmp_path, caplog, capsys):
    """runtime.cpu_bf16 on a CPU without a fast bf16 path (measured 10-13x slower than fp32 on a Zen 3 with AVX2):
    one warning per process from use_amp (still bf16: the profile's numbers), and `easycore check` prints it before
    any stage runs; nothing is said where the CPU has the path, where cpu_bf16 is off, or on CUDA."""
    import logging

    from easycore.config import RuntimeConfig, load_params
    from easycore.core import runtime
    from easycore.pipeline import stages

    cpu, on = torch.device("cpu"), RuntimeConfig(device="cpu", cpu_bf16=True)
    assert isinstance(runtime.cpu_bf16_fast(), bool)             # torch's answer for this machine
    monkeypatch.setattr(runtime, "cpu_bf16_fast", lambda: True)
    assert runtime.slow_cpu_bf16(on, cpu) is None
    monkeypatch.setattr(runtime, "cpu_bf16_fast", lambda: False)
    assert runtime.slow_cpu_bf16(RuntimeConfig(device="cpu"), cpu) is None
    assert runtime.slow_cpu_bf16(on, torch.device("cuda")) is None
    msg = runtime.slow_cpu_bf16(on, cpu)
    assert "emulates bf16" in msg and "avx512_bf16" in msg
    runtime._warn_once.cache_clear()
    with caplog.at_level(logging.WARNING, logger="easycore"):
        assert runtime.use_amp(on, cpu) and runtime.use_amp(on, cpu)
    assert [r.getMessage() for r in caplog.records] == [msg]       # once, however often asked

    params = tmp_path / "p.yaml"
    params.write_text("data: {dataset: synthetic, n_per_class: 4}\nruntime: {device: cpu, cpu_bf16: true}\n")
    stages.check(load_params(params), tmp_path / "code" / "x.txt", matrix=tmp_path / "matrix.yaml")
    out = capsys.readouterr().out
    assert f"check: WARNING {msg}" in out and "check: params valid" in out


def test_callback_seconds_attribute_each_hook_and_pieces_add_up(ds):
    """TrainResult.callback_seconds times each callback's epoch hooks (a slow hook is charged to its own name, not to
    the steps); stages.pieces_of splits a run's epochs into the optimiser steps and those hooks, adding up to them."""
    import time

    from easycore.pipeline.stages import pieces_of

    class Slow(Callback):
        name = "schedule"

        def on_epoch_start(self, loop):
            time.sleep(0.2)

    res = train(small_cfg(epochs=2), ds, tracker=AIGNTracker(n=len(ds), mode="exact", epochs=2),
                callbacks=[Slow()], progress=False)
    assert set(res.callback_seconds) == {"aign", "schedule"}
    assert 0.4 <= res.callback_seconds["schedule"] < 0.4 + 0.5 * sum(res.epoch_seconds)
    assert res.callback_seconds["aign"] > 0
    p = pieces_of(res, after=1.5, after_name="features, test accuracy")
    assert set(p) == {"optimiser steps", "exact AIGN pass", "coreset re-selection (adaptive)",
                      "features, test accuracy"}
    assert sum(p.values()) - 1.5 == pytest.approx(sum(res.epoch_seconds), abs=0.05)
    assert p["optimiser steps"] > 0
