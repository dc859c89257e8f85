"""ImageNet through the pipeline's stage functions on a generated copy of the official layout
(`<root>/imagenet/{train,val}/<wnid>/*.JPEG`, images of several sizes): prepare writes a manifest, not pixels; the
proxy, a static coreset, the full-data run and evaluation stream the files through DataLoader workers at a low
resolution; re-opening data that changed is refused."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from easycore.pipeline import stages as pipeline, runs
from easycore.config import params_from_dict
from easycore.store import ArtifactError, load_tensors
from test_datasets import make_imagenet, save_jpeg


@pytest.fixture
def imagenet(tmp_path, monkeypatch):
    make_imagenet(tmp_path / "data" / "imagenet", per_class=6, val_per_class=3)
    monkeypatch.delenv("EASYCORE_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    return tmp_path


def _params(root):
    return params_from_dict({
        "data": {"dataset": "imagenet", "root": str(root / "data"), "n_per_class": 4, "test_n_per_class": 2,
                 "image_size": 32, "workers": 0},
        "runtime": {"device": "cpu"},
        "proxy": {"model": "cnn_tiny", "transfer_models": [], "epochs": 2, "batch_size": 4, "deepfool_steps": 1,
                  "aign": {"mode": "exact", "batch_size": 8}},
        "coreset": {"methods": ["easycore"], "fractions": [0.5], "adaptive": ["acs_craig"], "transfer_methods": [],
                    "acs": {"every": 1, "kappa": 0.5, "batch_size": 2}},
        "train": {"model": "cnn_tiny", "epochs": 2, "batch_size": 4, "modes": ["trades"], "seeds": [0],
                  "attack": {"steps": 1}},
        "eval": {"n_test": 6, "pgd_steps": 2, "eps_grid": [0.0], "sanity": False},
    })


def test_imagenet_streams_through_every_stage(imagenet, capsys):
    params = _params(imagenet)
    info = pipeline.prepare(params)
    assert info["streaming"] and info["train"]["n"] == 12 and info["test"]["n"] == 6
    tensors, meta = load_tensors("data/prepared/train.safetensors")
    assert set(tensors) == {"y", "index"} and meta["streaming"]        # a manifest: no pixels
    assert meta["fingerprint"].startswith("imagenet-train-n12-")

    pipeline.proxy(params, "main")
    dyn = np.load("runs/proxy/main/s0/dynamics.npz")
    assert dyn["aign_l2"].shape == (2, 12) and np.isfinite(dyn["aign_l2"]).all()
    assert dyn["features"].shape[0] == 12

    pipeline.select(params, "easycore", 0.5, "main")
    for run in runs.expected_runs(params):
        pipeline.train_named(params, run, progress=False)
        pipeline.evaluate_named(params, run, progress=False)
        m = json.loads((run.eval_dir() / "metrics.json").read_text())
        assert m["clean"]["n"] == 6 and 0 <= m["robust"]["accuracy"] <= m["clean"]["accuracy"] <= 1
    assert {r.method for r in runs.expected_runs(params)} == {"easycore", "acs_craig", "full"}
    assert "test accuracy" in capsys.readouterr().out


def test_changed_imagenet_files_are_refused(imagenet):
    params = _params(imagenet)
    pipeline.prepare(params)
    for k, victim in enumerate(sorted((imagenet / "data" / "imagenet" / "train").rglob("*.JPEG"))):
        save_jpeg(victim, 30, 90, seed=99 + k)                          # other files: another manifest
    with pytest.raises(ArtifactError, match="not the ones .* was prepared from"):
        pipeline.load_prepared(pipeline.PREPARED, params)


def test_image_size_is_part_of_the_prepared_manifest(imagenet):
    """Issue 25 item 2: data.image_size changes what every later stage decodes: it is in the prepared manifest (so
    DVC re-runs the stages that depend on it), and a manifest prepared for another size is refused."""
    import dataclasses

    params = _params(imagenet)
    pipeline.prepare(params)
    before = {f: (imagenet / "data/prepared" / f).read_bytes() for f in ("train.safetensors", "test.safetensors",
                                                                          "info.json")}
    assert load_tensors("data/prepared/train.safetensors")[1]["image_size"] == 32
    bigger = dataclasses.replace(params, data=dataclasses.replace(params.data, image_size=48))
    with pytest.raises(ArtifactError, match="prepared for data.image_size 32 but the params say 48"):
        pipeline.load_prepared(pipeline.PREPARED, bigger)
    pipeline.prepare(bigger)
    after = {f: (imagenet / "data/prepared" / f).read_bytes() for f in before}
    assert all(after[f] != before[f] for f in before)
    assert len(pipeline.load_prepared(pipeline.PREPARED, bigger)) == 2
