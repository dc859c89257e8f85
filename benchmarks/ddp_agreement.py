"""How close is a 2-rank DDP proxy (torchrun, gloo, CPU) to the one-process proxy? (issue 24, docs/scale.md §2)

The demo's proxy (params.yaml: model, batch size, optimiser, augmentation) on a small CIFAR-10 subset, run three
times through the CLI a user runs: `easycore proxy` (one process), `torchrun --nproc_per_node=2 -m easycore proxy`
with runtime.sync_bn true (BatchNorm over the global batch: easycore/core/syncbn.py) and with sync_bn false (each rank
normalises by its own half batch). Reports per tracked epoch the median and max relative difference of the exact
AIGN (L2) to the one-process run, and how many images the EasyCore coresets (fractions 0.1, 0.3) share with the
one-process coresets. A baseline row: the same one-process run on 2 threads (other float summation orders, no
other change), the drift that rounding alone produces in this training.

    python -m benchmarks.ddp_agreement [--n-per-class 10] [--epochs 10] [--out reports/benchmarks.md]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from benchmarks._common import DEFAULT_OUT, REPO, data_root


def _run(cmd, cwd, env, threads: int = 1) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, env=dict(env, OMP_NUM_THREADS=str(threads)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {r.returncode}):\n{r.stdout[-3000:]}")
    return time.perf_counter() - t0


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-per-class", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--no-augment", action="store_true", help="proxy.augment false")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown report appended to ('-': print only)")
    a = ap.parse_args(argv)
    from easycore.core.coresets import select

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(dataset=a.dataset, root=str(data_root()), n_per_class=a.n_per_class, test_n_per_class=2)
    params["runtime"].update(device="cpu")
    params["proxy"].update(epochs=a.epochs, transfer_models=[], augment=not a.no_augment, aign={"mode": "exact", "every": 1, "batch_size": 128})
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    env.pop("EASYCORE_DATA", None)
    secs, dyn = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "params.yaml").write_text(yaml.safe_dump(params))
        _run(["easycore", "prepare", "-q"], tmp, env)
        runs = {"one process": ["easycore", "proxy", "-q"],
                "one process, 2 threads": ["easycore", "proxy", "-q"],
                "2 ranks, sync_bn": ["torchrun", "--nproc_per_node=2", "-m", "easycore", "proxy", "-q", "--set",
                                     "runtime.sync_bn=true"],
                "2 ranks, per-rank BN": ["torchrun", "--nproc_per_node=2", "-m", "easycore", "proxy", "-q", "--set",
                                         "runtime.sync_bn=false"]}
        for k, (name, cmd) in enumerate(runs.items()):
            secs[name] = _run(cmd + ["--out", f"out{k}"], tmp, env, threads=2 if "2 threads" in name else 1)
            dyn[name] = dict(np.load(Path(tmp) / f"out{k}" / "dynamics.npz"))
    ref = dyn["one process"]
    n = len(ref["labels"])
    lines = [f"### DDP vs one process (`python -m benchmarks.ddp_agreement`, {time.strftime('%Y-%m-%d')})", "",
             f"Proxy {params['proxy']['model']} on {a.dataset} ({n} training images), {a.epochs} epochs, batch "
             f"{params['proxy']['batch_size']} (global), augment {params['proxy']['augment']}, CPU, one thread per "
             f"process; torchrun on gloo. Relative AIGN-L2 difference to the one-process run, median / max over the "
             f"images, per epoch; coreset overlap = images the EasyCore coreset shares with the one-process one.", "",
             "| run | seconds | " + " | ".join(f"epoch {e + 1}" for e in range(a.epochs)) + " | coreset 0.1 | coreset 0.3 |",
             "|---|---|" + "---|" * a.epochs + "---|---|"]
    for name, d in dyn.items():
        if name == "one process":
            continue
        rel = np.abs(d["aign_l2"] - ref["aign_l2"]) / np.maximum(np.abs(ref["aign_l2"]), 1e-12)
        cells = [f"{np.median(r):.1e} / {r.max():.1e}" for r in rel]
        over = []
        for f in (0.1, 0.3):
            want = set(select("easycore", ref, ref["labels"], f, seed=0).tolist())
            got = set(select("easycore", d, ref["labels"], f, seed=0).tolist())
            over.append(f"{len(want & got)} of {len(want)}")
        lines.append(f"| {name} | {secs[name]:.0f} | " + " | ".join(cells) + " | " + " | ".join(over) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if str(a.out) != "-":
        with open(a.out, "a") as fh:
            fh.write("\n" + text)
    return text


if __name__ == "__main__":
    main()
