"""The state of every random generator a training run draws from, as plain data a resume checkpoint can hold.

`get_rng_state()` returns a dict made only of tensors, ints, floats, strs, lists and None, so that
`store.save_state` writes it and `store.load_state` (torch.load with weights_only=True) reads it back;
`set_rng_state(d)` restores it. Covered: torch's CPU generator, every CUDA device's generator (when CUDA is
available), numpy's legacy global generator (np.random.*), and Python's `random`.
"""
from __future__ import annotations

import random

import numpy as np
import torch

VERSION = 1


def get_rng_state() -> dict:
    """{"version", "torch": uint8 tensor, "cuda": [uint8 tensor per device] ([] without CUDA),
    "numpy": {"bit_generator", "keys": int64 tensor (624,), "pos", "has_gauss", "cached_gaussian"},
    "python": {"version", "internal": int64 tensor (625,), "gauss_next": float or None}}."""
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    py_version, internal, gauss_next = random.getstate()
    return {
        "version": VERSION,
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {"bit_generator": str(name), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(py_version), "internal": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": None if gauss_next is None else float(gauss_next)},
    }


def set_rng_state(state: dict) -> None:
    """Restore generators from `get_rng_state()`'s dict (also accepts the older layout with numpy's and
    Python's native state tuples). CUDA states are restored for the devices present (extra ones ignored)."""
    torch.set_rng_state(torch.as_tensor(state["torch"]).to("cpu", torch.uint8))
    npst = state["numpy"]
    if isinstance(npst, dict):
        keys = torch.as_tensor(npst["keys"]).cpu().numpy().astype(np.uint32)
        np.random.set_state((npst["bit_generator"], keys, int(npst["pos"]), int(npst["has_gauss"]),
                             float(npst["cached_gaussian"])))
    else:
        np.random.set_state(tuple(npst))
    pyst = state["python"]
    if isinstance(pyst, dict):
        internal = tuple(int(v) for v in torch.as_tensor(pyst["internal"]).tolist())
        random.setstate((int(pyst["version"]), internal, pyst["gauss_next"]))
    else:
        random.setstate(tuple(pyst))
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available():
        for i, s in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(torch.as_tensor(s).to("cpu", torch.uint8), i)
