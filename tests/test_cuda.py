"""CUDA paths against the CPU reference: skipped on machines without a GPU (CI has none).

Run on a GPU machine with `pytest tests/test_cuda.py`. What they pin down: the device-resident loader gives
the same batches on CUDA as on CPU (the augmentation RNG lives on the CPU); AIGN on CUDA in fp32 matches
the CPU value, and in bf16 (the `runtime.amp` path) keeps the ranking; PGD in bf16 stays in the eps-ball and
agrees with fp32 robust accuracy; the training loop runs with bf16 + channels_last (+ resume); the
paper-scale epoch benchmark runs.
"""
import numpy as np
import pytest
import torch

from easycore.core.aign import exact_pass, per_sample_input_grad_norm, spearman
from easycore.core.attacks import pgd, predict
from easycore.config import RuntimeConfig, TrainConfig
from easycore.data.loaders import DeviceLoader, load_dataset
from easycore.core.models import build_model
from easycore.core.train import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


def _trained_cnn(n_per_class=30, epochs=3, device="cuda"):
    ds = load_dataset("synthetic", "train", ".", n_per_class=n_per_class, seed=0)
    cfg = TrainConfig(model="cnn_small", epochs=epochs, batch_size=64)
    return train(cfg, ds, seed=0, runtime=RuntimeConfig(device=device), progress=False).model.eval(), ds


def _in_order(ds, batch_size=128):
    """The un-augmented set in order on the GPU (NHWC): the loader train() gives the exact AIGN pass."""
    return DeviceLoader(ds.x, ds.y, batch_size=batch_size, device=CUDA, shuffle=False, augment=False,
                        channels_last=True)


def test_device_loader_same_batches_on_cuda_as_on_cpu():
    ds = load_dataset("synthetic", "train", ".", n_per_class=20, seed=0)
    kw = dict(batch_size=32, shuffle=True, augment=True, seed=3)
    cpu = DeviceLoader(ds.x, ds.y, device="cpu", **kw)
    gpu = DeviceLoader(ds.x, ds.y, device=CUDA, channels_last=True, **kw)
    for epoch in (0, 1):
        cpu.set_epoch(epoch)
        gpu.set_epoch(epoch)
        for (xc, yc, ic), (xg, yg, ig) in zip(cpu, gpu):
            assert xg.is_cuda and xg.is_contiguous(memory_format=torch.channels_last)
            assert torch.equal(ic, ig.cpu()) and torch.equal(yc, yg.cpu())
            # crop/flip are gathers: the pixels are exact; the / 255 after them is PyTorch's CUDA shortcut
            # x * (1/255) for a scalar divisor, within 1 ulp of the CPU's true division
            assert torch.equal((xc * 255).round(), (xg.cpu() * 255).round())
            assert torch.allclose(xc, xg.cpu(), rtol=2.0 ** -23, atol=0), (xc - xg.cpu()).abs().max()


def test_aign_on_cuda_matches_cpu_fp32_and_bf16_keeps_the_ranking():
    model, ds = _trained_cnn()
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        x = ds.x.float() / 255
        ref = per_sample_input_grad_norm(model.cpu(), x, ds.y)
        model = model.to(CUDA)
        got = per_sample_input_grad_norm(model, x.to(CUDA), ds.y.to(CUDA)).cpu()
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-6)
        fp32 = exact_pass(model, _in_order(ds), amp=False)
        torch.testing.assert_close(fp32["aign_l2"], ref, rtol=1e-4, atol=1e-6)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    bf16 = exact_pass(model, _in_order(ds), amp=True)
    rho = spearman(bf16["aign_l2"].numpy(), fp32["aign_l2"].numpy())
    assert rho > 0.98, f"bf16 AIGN ranks differ from fp32: Spearman {rho:.4f}"
    assert (bf16["correct"] != fp32["correct"]).float().mean() < 0.02


def test_pgd_bf16_in_ball_and_agrees_with_fp32():
    model, _ = _trained_cnn()
    te = load_dataset("synthetic", "test", ".", n_per_class=50, seed=0)
    x, y = te.x.to(CUDA).float() / 255, te.y.to(CUDA)
    eps = 4 / 255
    accs = {}
    for amp in (False, True):
        g = torch.Generator(device=CUDA).manual_seed(0)
        adv = pgd(model, x, y, eps=eps, alpha=eps / 4, steps=10, amp=amp, generator=g)
        assert adv.dtype == torch.float32
        assert float((adv - x).abs().max()) <= eps + 1e-6 and float(adv.min()) >= 0 and float(adv.max()) <= 1
        accs[amp] = float((predict(model, adv) == y).float().mean())
    assert abs(accs[True] - accs[False]) <= 0.05, accs
    assert not model.training


def test_train_bf16_channels_last_runs_and_resumes(tmp_path):
    ds = load_dataset("synthetic", "train", ".", n_per_class=20, seed=0)
    cfg = TrainConfig(model="cnn_small", epochs=2, batch_size=32)
    rt = RuntimeConfig(device="cuda", amp=True, channels_last=True, deterministic=False)
    full = train(cfg, ds, mode="trades", seed=0, runtime=rt, progress=False)
    assert all(np.isfinite(h["loss"]) for h in full.history)
    assert next(full.model.parameters()).is_cuda
    # with a state path, a finished run's checkpoint is found again and nothing is recomputed
    state = tmp_path / ".run.state.pt"
    train(cfg, ds, mode="standard", seed=0, runtime=rt, progress=False, state_path=state)
    again = train(cfg, ds, mode="standard", seed=0, runtime=rt, progress=False, state_path=state)
    assert again.epochs_run == 0 and len(again.history) == 2


def test_epoch_time_benchmark_quick_on_cuda(tmp_path):
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    if str(repo) not in sys.path:
        sys.path.insert(0, str(repo))
    from benchmarks import epoch_time

    out = tmp_path / "b.md"
    assert epoch_time.main(["--quick", "--device", "cuda", "--variants", "default,fp32,nchw", "--out", str(out)]) == 0
    text = out.read_text()
    assert "GPU: " in text and "trades/standard (default)" in text and "standard fp32/default" in text
