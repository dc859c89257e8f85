"""Run every benchmark: `python -m benchmarks [--quick] [--out reports/benchmarks.md] [--only a,b]`.

Each script appends a dated Markdown section (with the machine description) to --out, except
profile_epoch, which (re)writes reports/profile_epoch.md. --quick is a smoke run (tiny sizes, 1 thread,
numbers meaningless) that prints only unless --out is given. A failing script is reported and the
others still run; the exit status is non-zero if any failed.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback

SCRIPTS = ("aign_overhead", "train_step", "input_pipeline", "memory", "attack_speed", "profile_epoch", "epoch_time",
           "dvc_overhead", "cpu_speed", "eval_bulk", "concurrent_runs", "bulk_overhead")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None, help="Markdown file for the sections (default reports/benchmarks.md; "
                    "with --quick: print only)")
    ap.add_argument("--profile-out", default=None, help="profile report (default reports/profile_epoch.md; "
                    "with --quick: print only)")
    ap.add_argument("--only", default="", help="comma-separated subset of " + ",".join(SCRIPTS))
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = ap.parse_args(argv)
    names = [s.strip() for s in args.only.split(",") if s.strip()] or list(SCRIPTS)
    unknown = set(names) - set(SCRIPTS)
    if unknown:
        ap.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {list(SCRIPTS)}")

    failed = []
    for name in names:
        try:
            mod = importlib.import_module(f"benchmarks.{name}")
        except ImportError as e:
            print(f"[benchmarks] {name}: not available ({e}); skipped")
            continue
        sub = ["--quick"] if args.quick else []  # every script takes --quick (benchmarks._common.base_parser)
        out = args.profile_out if name == "profile_epoch" else args.out
        if out is not None:
            sub += ["--out", out]
        sub += ["--device", args.device]
        print(f"\n[benchmarks] === {name} {' '.join(sub)}", flush=True)
        t0 = time.perf_counter()
        try:
            rc = mod.main(sub)
        except SystemExit as e:  # argparse errors
            rc = e.code if isinstance(e.code, int) else 1
        except Exception:
            traceback.print_exc()
            rc = 1
        print(f"[benchmarks] {name}: rc {rc} in {time.perf_counter() - t0:.1f}s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"[benchmarks] FAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
