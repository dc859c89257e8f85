"""`easycore` command line: one subcommand per pipeline stage, all driven by a params file.

    easycore prepare                       load + subset the data          -> data/prepared/
    easycore proxy [--model M] [--out D]   full-data run recording AIGN    -> runs/proxy/main/   (alias: score)
    easycore select --method M --fraction F [--proxy D] [--out D]          -> runs/coresets/M-F/
    easycore train --mode MODE --seed S [--indices I | --full] [--out D]   -> runs/train/RUN/
    easycore eval --model-path P [--out D]                                 -> runs/eval/RUN/
    easycore methods                       the coreset methods and their directions

Every subcommand takes --params (default params.yaml) and --set key.sub=value overrides.
Errors (bad params, missing or mismatched data/artifacts, non-finite loss) print one line and exit 2.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import __version__


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a param, e.g. --set train.epochs=3 (repeatable)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="easycore", description="EasyCore: coresets of easy (low-AIGN) samples "
                                 "for adversarial robustness. Stages of the DVC pipeline.")
    ap.add_argument("--version", action="version", version=f"easycore {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    p = sub.add_parser("prepare", help="load the dataset (subset) into data/prepared/")
    _common(p)
    p.add_argument("--out", default="data/prepared")
    p.add_argument("--download", action="store_true", help="let torchvision download the official files")

    for name, hlp in (("proxy", "full-data proxy run: AIGN + training dynamics + features + DeepFool"),
                      ("score", "alias of proxy")):
        p = sub.add_parser(name, help=hlp)
        _common(p)
        p.add_argument("--model", default=None, help="architecture (default: proxy.model)")
        p.add_argument("--out", default="runs/proxy/main")
        p.add_argument("--prepared", default="data/prepared")

    p = sub.add_parser("select", help="select a coreset from the proxy's scores")
    _common(p)
    p.add_argument("--method", required=True)
    p.add_argument("--fraction", required=True, type=float)
    p.add_argument("--proxy", default="runs/proxy/main", help="proxy output folder")
    p.add_argument("--out", default=None, help="default runs/coresets/<method>-<fraction>")
    p.add_argument("--prepared", default="data/prepared")

    p = sub.add_parser("train", help="train a model on a coreset (or the full set)")
    _common(p)
    p.add_argument("--mode", required=True, help="standard | pgd_at | trades | fgsm_rs")
    p.add_argument("--seed", type=int, default=0)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--indices", default=None, help="coreset indices .npy")
    g.add_argument("--full", action="store_true", help="train on the full prepared training set")
    p.add_argument("--model", default=None, help="architecture (default: train.model)")
    p.add_argument("--out", required=True)
    p.add_argument("--prepared", default="data/prepared")

    p = sub.add_parser("eval", help="clean / FGSM / PGD / AutoAttack accuracy of a trained model")
    _common(p)
    p.add_argument("--model-path", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--prepared", default="data/prepared")

    sub.add_parser("methods", help="list coreset methods with score and direction")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from .config import ConfigError, MODES, load_params
    from .data import DataError
    from .store import ArtifactError
    from .train import NonFiniteLoss

    try:
        if args.cmd == "methods":
            from .coresets import direction_table_markdown

            print(direction_table_markdown())
            return 0
        overrides = list(args.overrides)
        if getattr(args, "download", False):
            overrides.append("data.download=true")
        params = load_params(args.params, overrides)
        progress = not args.quiet
        from . import pipeline as pl

        if args.cmd == "prepare":
            pl.prepare(params, Path(args.out))
        elif args.cmd in ("proxy", "score"):
            pl.proxy(params, Path(args.out), model=args.model, prepared=Path(args.prepared), progress=progress)
        elif args.cmd == "select":
            from .coresets import METHODS

            if args.method not in METHODS:
                raise ConfigError(f"--method {args.method!r} is not allowed; choose one of {sorted(METHODS)}")
            if not 0 < args.fraction <= 1:
                raise ConfigError(f"--fraction {args.fraction!r} is not allowed; must be in (0, 1]")
            out = Path(args.out or f"runs/coresets/{args.method}-{pl.fmt_fraction(args.fraction)}")
            pl.select(params, args.method, args.fraction, out, proxy_dir=Path(args.proxy), prepared=Path(args.prepared))
        elif args.cmd == "train":
            if args.mode not in MODES:
                raise ConfigError(f"--mode {args.mode!r} is not allowed; choose one of {list(MODES)}")
            pl.train_run(params, Path(args.out), mode=args.mode, seed=args.seed,
                         indices=None if args.full else Path(args.indices), model=args.model,
                         prepared=Path(args.prepared), progress=progress)
        elif args.cmd == "eval":
            pl.evaluate_run(params, Path(args.model_path), Path(args.out), prepared=Path(args.prepared), progress=progress)
        return 0
    except (ConfigError, DataError, ArtifactError, NonFiniteLoss) as e:
        msg = " ".join(str(e).split("\n"))  # one line, even when a wrapped library message has several
        print(f"easycore {args.cmd}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"easycore {args.cmd}: interrupted; run the same command again to resume from the last saved epoch",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
