"""store.py: byte-stable artifacts, loaders that run no code from a file, one-line errors, umask; rng.py."""
from __future__ import annotations

import collections
import json
import os
import pickle
import random
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from easycore.rng import get_rng_state, set_rng_state
from easycore.store import (ArtifactError, atomic_path, load_arrays, load_state, load_tensors, load_torch,
                            read_json, save_arrays, save_npy, save_state, save_tensors, write_json)


def _tensors():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 4, generator=g)
    return {
        "w": base.t(),                                            # non-contiguous view
        "b": base[0],                                             # shares memory with w
        "x": torch.randint(0, 256, (5, 3, 4, 4), dtype=torch.uint8, generator=g),
        "y": torch.arange(5),
        "h": torch.randn(3, generator=g).to(torch.bfloat16),
        "m": torch.tensor([True, False, True]),
        "s": torch.tensor(3.5),                                   # 0-d
        "e": torch.zeros(0, 7),                                   # empty
    }


META = {"fingerprint": "synthetic-train-n5-abc", "n": 5, "classes": ["a", "b"], "mean": [0.5, 0.25]}


def _state():
    torch.manual_seed(0); np.random.seed(0); random.seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    for i, q in enumerate(model.parameters()):                   # elementwise only: same bits on any thread count
        q.grad = torch.full_like(q, 0.25 * (i + 1))
    opt.step()
    sched.step()
    return {"identity_hash": "abc123", "epoch": 3, "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "history": [{"epoch": 1, "loss": 2.25, "lr": 0.1}],
            "tracker": {"rows": {"aign": [np.arange(4, dtype=np.float32)], "correct": [np.ones(4, bool)]},
                        "tracked_epochs": [0, 2]},
            "rng": get_rng_state(), "pair": (1, "two", 3.0, None, True)}


def _arrays():
    return {"aign_l2": np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4), "correct": np.eye(3, dtype=bool),
            "idx": np.arange(7), "names": np.array(["pgd", "fgsm"])}


def _save_all(folder: Path, name: str) -> dict[str, bytes]:
    """Each writer, same content, into `folder` under `name`: the bytes by kind."""
    return {
        "tensors": save_tensors(folder / f"{name}.safetensors", _tensors(), META).read_bytes(),
        "state": save_state(folder / f"{name}.state.pt", _state()).read_bytes(),
        "arrays": save_arrays(folder / f"{name}.npz", _arrays(), META).read_bytes(),
        "json": write_json(folder / f"{name}.json", {"b": [1, 2.5], "a": np.float32(0.5), "p": Path("x")}).read_bytes(),
        "npy": save_npy(folder / f"{name}.npy", np.arange(9).reshape(3, 3)).read_bytes(),
    }


# ----------------------------------------------------------------------------- byte-stable
def test_same_content_gives_same_bytes_across_paths_and_processes(tmp_path):
    a = _save_all(tmp_path / "a", "model")
    b = _save_all(tmp_path / "b", "other-name")              # other target + other random temp names
    for kind in a:
        assert a[kind] == b[kind], kind
    # a fresh interpreter (as `dvc repro` runs it): same bytes again
    code = ("import sys, tests.test_store as t; from pathlib import Path; t._save_all(Path(sys.argv[1]), 'zz')")
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([root] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "c")], capture_output=True, text=True, timeout=120,
                       cwd=root, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    for kind, suffix in [("tensors", ".safetensors"), ("state", ".state.pt"), ("arrays", ".npz"), ("json", ".json"),
                         ("npy", ".npy")]:
        assert (tmp_path / "c" / f"zz{suffix}").read_bytes() == a[kind], kind


def test_tensor_order_and_layout_do_not_change_bytes(tmp_path):
    t = _tensors()
    p1 = save_tensors(tmp_path / "1.safetensors", t, META)
    shuffled = {k: t[k].contiguous().clone() for k in reversed(list(t))}
    p2 = save_tensors(tmp_path / "2.safetensors", shuffled, META)
    assert p1.read_bytes() == p2.read_bytes()
    back, meta = load_tensors(p1, fingerprint=META["fingerprint"], length=5)
    assert meta == META and list(back) == sorted(t)
    for k, v in t.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape and torch.equal(back[k], v), k
    with pytest.raises(ArtifactError, match="other data"):
        load_tensors(p1, fingerprint="synthetic-train-n5-zzz")


def test_zip_members_have_fixed_dates_and_names(tmp_path):
    p = save_arrays(tmp_path / "d.npz", _arrays(), META)
    with zipfile.ZipFile(p) as z:
        assert [i.filename for i in z.infolist()] == ["aign_l2.npy", "correct.npy", "idx.npy", "names.npy", "__meta__.npy"]
        assert {i.date_time for i in z.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    with np.load(p, allow_pickle=False) as z:                   # still a plain .npz
        assert json.loads(str(z["__meta__"])) == META and z["names"].tolist() == ["pgd", "fgsm"]
    s = save_state(tmp_path / "weird name.tmp.pt", {"w": torch.ones(2)})
    with zipfile.ZipFile(s) as z:                               # torch's root folder: never the (temp) file name
        assert {n.split("/")[0] for n in z.namelist()} == {"archive"}


# ----------------------------------------------------------------------------- round trips
def test_state_round_trip_keeps_types(tmp_path):
    st = _state()
    back = load_state(save_state(tmp_path / "s.pt", st))
    assert isinstance(back["model"], collections.OrderedDict) and list(back["model"]) == list(st["model"])
    assert all(torch.equal(back["model"][k], v) for k, v in st["model"].items())
    assert back["optimizer"]["param_groups"] == st["optimizer"]["param_groups"]
    assert torch.equal(back["optimizer"]["state"][0]["momentum_buffer"], st["optimizer"]["state"][0]["momentum_buffer"])
    assert back["scheduler"] == st["scheduler"] and back["history"] == st["history"] and back["pair"] == st["pair"]
    rows = back["tracker"]["rows"]
    assert rows["aign"][0].dtype == np.float32 and rows["correct"][0].dtype == bool
    assert np.array_equal(rows["aign"][0], np.arange(4))


@pytest.mark.parametrize("bad, where", [({"f": lambda: 0}, "state['f']"), ({"s": {1, 2}}, "state['s']"),
                                        ({"h": [{"loss": np.float64(1.0)}]}, "state['h'][0]['loss']"),
                                        ({"o": np.array([1, None])}, "state['o']")])
def test_save_state_refuses_what_load_state_would(tmp_path, bad, where):
    with pytest.raises(TypeError) as ei:
        save_state(tmp_path / "s.pt", bad)
    assert where in str(ei.value)
    assert list(tmp_path.iterdir()) == []


def test_rng_round_trip_through_a_checkpoint(tmp_path):
    random.seed(1); np.random.seed(2); torch.manual_seed(3)
    random.gauss(0, 1); np.random.standard_normal(1)           # leave cached Gaussians behind
    st = get_rng_state()
    assert st["numpy"]["has_gauss"] == 1 and st["python"]["gauss_next"] is not None

    def draws():
        return (torch.rand(4).tolist(), torch.randn(3).tolist(), np.random.rand(3).tolist(),
                np.random.standard_normal(2).tolist(), [random.random() for _ in range(3)], random.gauss(0, 1))

    expected = draws()
    path = save_state(tmp_path / "rng.pt", {"rng": st})
    draws(); draws()                                            # move every generator on
    set_rng_state(load_state(path)["rng"])
    assert draws() == expected
    assert draws() != expected                                  # the generators really advance


def test_legacy_pt_files_load_without_pickle_code(tmp_path):
    """A .pt from before this module (torch.save to a path, numpy RNG tuple inside) still loads, weights_only."""
    random.seed(5); np.random.seed(6); torch.manual_seed(7)
    old_rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(), "cuda": None}
    p = tmp_path / "model.pt"
    torch.save({"model": {"w": torch.ones(2, 2)}, "meta": {"model": "cnn_tiny", "mean": [0.5]}, "rng": old_rng}, p)
    expected = (torch.rand(2).tolist(), np.random.rand(2).tolist(), random.random())
    ck = load_torch(p)
    assert torch.equal(ck["model"]["w"], torch.ones(2, 2)) and ck["meta"]["model"] == "cnn_tiny"
    set_rng_state(ck["rng"])
    assert (torch.rand(2).tolist(), np.random.rand(2).tolist(), random.random()) == expected


# ----------------------------------------------------------------------------- unsafe files
class _Evil:
    """Unpickling this calls open(target, 'w'): a file appears if the loader runs code from the file."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    control = tmp_path / "control"                              # the payload is live: plain pickle runs it
    pickle.loads(pickle.dumps(_Evil(control))).close()
    assert control.exists()

    target = tmp_path / "pwned"
    zipped = tmp_path / "model.pt"                              # torch's zip format with the payload in data.pkl
    torch.save({"w": torch.ones(3), "x": _Evil(target)}, zipped)
    raw = tmp_path / "raw.pt"                                   # a bare pickle stream (torch's legacy format)
    raw.write_bytes(pickle.dumps({"w": 1, "x": _Evil(target)}, protocol=2))
    for p in (zipped, raw):
        for load in (load_state, load_torch):
            with pytest.raises(ArtifactError) as ei:
                load(p)
            msg = str(ei.value)
            assert msg.startswith(f"refusing to load {p}: not a plain-tensor checkpoint"), msg
            assert "\n" not in msg
            assert not target.exists()


# ----------------------------------------------------------------------------- damaged files
def _damage(p: Path, how: str) -> None:
    data = p.read_bytes()
    if how == "truncated":
        p.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        p.write_bytes(b"")
    elif how == "garbage":
        p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif how == "text":
        p.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0000\nsize 12\n")


@pytest.mark.parametrize("how", ["truncated", "empty", "garbage", "text"])
@pytest.mark.parametrize("kind", ["tensors", "state", "arrays", "json"])
def test_damaged_files_give_one_line_corrupt_or_truncated(tmp_path, kind, how):
    big = {"w": torch.randn(64, 64)}
    save, load = {
        "tensors": (lambda p: save_tensors(p, big, META), load_tensors),
        "state": (lambda p: save_state(p, big), load_state),
        "arrays": (lambda p: save_arrays(p, {"w": big["w"].numpy()}, META), load_arrays),
        "json": (lambda p: write_json(p, {"a": list(range(100))}), read_json),
    }[kind]
    p = save(tmp_path / f"art.{kind}")
    _damage(p, how)
    with pytest.raises(ArtifactError) as ei:
        load(p)
    msg = str(ei.value)
    assert f"{p} is corrupt or truncated" in msg and "delete it and re-run the stage that makes it" in msg, msg
    assert "\n" not in msg
    with pytest.raises(ArtifactError, match=r"^missing .*nope"):
        load(tmp_path / "nope")


def test_object_arrays_are_refused_both_ways(tmp_path):
    p = tmp_path / "obj.npz"
    np.savez(p, a=np.arange(3), b=np.array([1, "x", None], dtype=object))     # written by someone else
    with pytest.raises(ArtifactError) as ei:
        load_arrays(p)
    msg = str(ei.value)
    assert msg.startswith(f"refusing to load {p}: array 'b' holds Python objects") and "\n" not in msg
    with pytest.raises(TypeError, match="Python objects"):
        save_arrays(tmp_path / "o2.npz", {"b": np.array([{}], dtype=object)}, {})
    assert not (tmp_path / "o2.npz").exists()


# ----------------------------------------------------------------------------- permissions
@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_files_respect_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        _save_all(tmp_path, "m")
        with atomic_path(tmp_path / "raw.bin") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(old)
    files = sorted(tmp_path.iterdir())
    assert len(files) == 6
    for f in files:
        assert f.stat().st_mode & 0o777 == 0o666 & ~mask, (f.name, oct(f.stat().st_mode))
