"""`easycore` command line: one subcommand per pipeline stage, all driven by a params file.

    easycore check                                   validate params (the pipeline's first stage)
    easycore prepare                                 load + subset the data            -> data/prepared/
    easycore proxy [--name main|<transfer model>] [--seed N]
                       full-data runs recording AIGN, one per replicate (train.seeds) -> runs/proxy/<name>/s<seed>/
    easycore select [--scores main]                  every coreset of that proxy      -> runs/coresets/<scores>/
    easycore select --method M --fraction F [--scores main] [--seed N]                 -> runs/coresets/<scores>/M-F/s<N>/
    easycore train --method M --fraction F --scores S --mode MODE [--seed N ...]
                       a group: every seed of train.seeds (or those given), in one process -> runs/train/<scores>/<group>/
    easycore train --indices I | --full --out D --mode MODE --seed N                   (any coreset file)
    easycore eval --method M --fraction F --scores S --mode MODE [--seed N ...]        -> runs/eval/<scores>/<group>/
    easycore eval --model-path P --out D
    easycore autoattack                              AutoAttack on the verdict's models -> runs/autoattack/
    easycore notebook NAME [-p key value ...] [--outcomes PATH]
                                                     execute notebooks/NAME.py         -> reports/notebooks/...
    easycore reports                                 re-execute every report notebook from the workspace's outputs
    easycore methods [--markdown]                    the coreset methods and their directions
    easycore tables [DOC ...]                        re-copy the report tables README.md and docs/*.md quote
    easycore adopt DIR [--profile FILE]              a finished `make profile` clone's report folder -> workspace

In dvc.yaml the run commands are `easycore proxy|select|train|eval --dvc`: the run (group, proxy) is the one the
DVC stage being run names ($DVC_STAGE), so no params value is ever part of a shell command line.
Every subcommand takes --params (default params.yaml) and --set key.sub=value overrides. Errors (bad params,
missing or mismatched data/artifacts, non-finite loss, and argparse mistakes: an unknown command, option or choice,
with a "did you mean" for near misses) print one line and exit 2; Ctrl-C exits 130. Building the parser and
`--help` import no torch: the registry choices (--method, --mode) are checked after parsing.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path

from easycore import __version__
from easycore.registry import did_you_mean  # one rule for the CLI and the registries

# the function each stage command runs (tests/test_architecture.py derives every stage's code dependencies from it)
from easycore.pipeline.commands import ENTRY  # noqa: E402


class UsageError(Exception):
    """An argparse mistake, as one line: 'easycore <command>: error: <message>'."""

    def __init__(self, prog: str, message: str):
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `error` raises UsageError (main prints it, exit 2) instead of printing the
    usage block; subparsers are of this class too (add_subparsers uses the parent's class)."""

    def error(self, message):
        raise UsageError(self.prog, message)


class _Fmt(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def _names(registry_kind: str, **where) -> list[str]:
    from easycore.registry import registry

    return registry(registry_kind).names(**where)


# registry-valued options, checked after parsing so that building the parser (and --help) imports no torch:
# dest -> (registry, filter) per command
_REGISTRY_OPTS = {"method": ("methods", {}), "mode": ("modes", {})}
_SELECT_METHODS = ("methods", {"kind": "static"})


def _common(p: argparse.ArgumentParser, *, dvc: bool = False) -> None:
    p.add_argument("--params", default="params.yaml", help="params file")
    if dvc:
        p.add_argument("--dvc", action="store_true", help="the run of the DVC stage being run ($DVC_STAGE, set by "
                       "DVC): how dvc.yaml's commands name their run, interpolating no params value")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a param, e.g. --set train.epochs=3 (repeatable)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _run_args(p: argparse.ArgumentParser, *, required: bool) -> None:
    p.add_argument("--method", required=False, help="coreset method (`easycore methods` lists them)")
    p.add_argument("--fraction", type=float, help="coreset fraction (1.0 for the full-data run)")
    p.add_argument("--scores", default="main", help="the proxy run whose scores chose the coreset (main, a transfer "
                   "model, or none for full-data and adaptive runs)")
    if required:
        p.add_argument("--mode", help="training mode (required; standard, trades, pgd_at, ...)")
        p.add_argument("--seed", type=_seed, action="append", default=None,
                       help="training seed (>= 0; repeatable); default every seed of train.seeds (the group)")


def _seed(v: str) -> int:
    s = int(v)
    if s < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {s}")
    return s


def inside_repo(value: str, option: str) -> str:
    """A relative path to an existing file inside the current folder (the repository): no absolute path, no '..',
    no symbolic link that leads out. Returns it normalised (forward slashes)."""
    from easycore.config import ConfigError

    p = Path(value)
    here = Path.cwd().resolve()
    if p.is_absolute() or ".." in p.parts or not (here / p).resolve().is_relative_to(here):
        raise ConfigError(f"{option} {value!r} is not allowed; give a path inside the repository (relative, no '..')")
    if not (here / p).is_file():
        raise ConfigError(f"{option} {value!r}: no such file")
    return p.as_posix()


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="easycore", formatter_class=_Fmt, description=__doc__.split("\n\n")[0])
    ap.add_argument("--version", action="version", version=f"easycore {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    p = sub.add_parser("check", formatter_class=_Fmt, help="validate params (the first stage of dvc.yaml)")
    _common(p)

    p = sub.add_parser("source", formatter_class=_Fmt,
                       help="identify the files the dataset is read from (the data_source stage; prepare depends on it)")
    _common(p)
    p.add_argument("--out", default="runs/data/source.json", help="output file")

    p = sub.add_parser("prepare", formatter_class=_Fmt, help="load the dataset (subset) into data/prepared/")
    _common(p)
    p.add_argument("--out", default="data/prepared", help="output folder")
    p.add_argument("--download", action="store_true", help="let torchvision download the official files")
    p.add_argument("--verify", action="store_true",
                   help="decode every selected image file before writing (file-per-image sets such as ImageNet; "
                        "by default each file gets a cheap header check)")

    for name, hlp in (("proxy", "full-data proxy run: AIGN + training dynamics + features + DeepFool"),
                      ("score", "alias of proxy")):
        p = sub.add_parser(name, formatter_class=_Fmt, help=hlp)
        _common(p, dvc=True)
        p.add_argument("--name", default="main", help="proxy run: main, or one of proxy.transfer_models")
        p.add_argument("--seed", type=_seed, default=None,
                       help="the replicate (a seed of train.seeds; proxy seed = proxy.seed + N); default every "
                            "replicate the params declare")
        p.add_argument("--out", default=None, help="output folder of one replicate (default runs/proxy/<name>/s<seed>)")
        p.add_argument("--prepared", default="data/prepared", help="prepared data folder")

    p = sub.add_parser("select", formatter_class=_Fmt, help="select a static coreset from a proxy's scores")
    _common(p, dvc=True)
    p.add_argument("--method",
                   help="coreset method (default: every coreset the params make from --scores)")
    p.add_argument("--fraction", type=float, help="fraction of the training set to keep, in (0, 1)")
    p.add_argument("--scores", default="main", help="proxy run whose records are used")
    p.add_argument("--seed", type=_seed, default=0,
                   help="with --method: the replicate (its proxy's records; coreset.seed + N seeds the choice)")
    p.add_argument("--out", default=None, help="default runs/coresets/<scores>/<method>-<fraction>/s<seed>")
    p.add_argument("--prepared", default="data/prepared", help="prepared data folder")

    p = sub.add_parser("train", formatter_class=_Fmt, help="train a model on a coreset (or the full set)")
    _common(p, dvc=True)
    _run_args(p, required=True)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--indices", default=None, help="a coreset indices .npy (instead of --method/--fraction)")
    g.add_argument("--full", action="store_true", help="train on the full prepared training set")
    p.add_argument("--model", default=None, help="architecture (default: train.model)")
    p.add_argument("--out", default=None, help="output folder (default: the run's folder under runs/train/)")
    p.add_argument("--prepared", default="data/prepared", help="prepared data folder")

    p = sub.add_parser("eval", formatter_class=_Fmt, help="clean / attacked accuracy of a trained model")
    _common(p, dvc=True)
    _run_args(p, required=False)
    p.add_argument("--mode", help="training mode of the run")
    p.add_argument("--seed", type=_seed, action="append", default=None,
                   help="training seed of the run (repeatable); default every seed of train.seeds (the group)")
    p.add_argument("--model-path", default=None, help="a model.safetensors (instead of the run options)")
    p.add_argument("--out", default=None, help="output folder (default: the run's folder under runs/eval/)")
    p.add_argument("--prepared", default="data/prepared", help="prepared data folder")

    p = sub.add_parser("autoattack", formatter_class=_Fmt,
                       help="AutoAttack on the models the verdict compares (eval.autoattack_modes)")
    _common(p)

    p = sub.add_parser("notebook", formatter_class=_Fmt, help="execute notebooks/NAME.py into reports/notebooks/")
    _common(p)
    p.add_argument("name", help="notebook name (a file notebooks/<name>.py)")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                   help="notebook parameter (YAML value), repeatable")
    p.add_argument("--out", default=None, help="executed notebook (default reports/notebooks/<name>.ipynb)")
    p.add_argument("--outcomes", default=None, metavar="PATH",
                   help="render from an exported outcomes file inside the repository (e.g. reports/outcomes.npz) "
                        "instead of runs/: the notebooks with an outcomes_path parameter (coresets)")

    p = sub.add_parser("reports", formatter_class=_Fmt,
                       help="re-execute every report notebook from the outputs in the workspace, without training")
    _common(p)
    p.add_argument("--only", nargs="+", default=None, metavar="NAME", help="only these notebooks")

    p = sub.add_parser("tables", formatter_class=_Fmt,
                       help="re-copy the report tables README.md and docs/*.md quote (their '<!-- rows of ... -->' "
                            "blocks) from reports/")
    p.add_argument("docs", nargs="*", metavar="DOC", help="Markdown files (default: README.md and docs/*.md)")

    p = sub.add_parser("adopt", formatter_class=_Fmt,
                       help="copy a finished profile run's report folder (make profile's clone) into the workspace, "
                            "with its provenance, then re-copy the tables")
    p.add_argument("clone", metavar="DIR", help="the clone `make profile` ran in (e.g. ../easycore-study-v2)")
    p.add_argument("--profile", default=None, metavar="FILE",
                   help="the params profile it must have run, byte for byte (e.g. params-study-v2.yaml)")

    p = sub.add_parser("methods", formatter_class=_Fmt, help="list coreset methods with score and direction")
    p.add_argument("--markdown", action="store_true", help="print the Markdown table (as in the README) instead of "
                   "the terminal table")
    return ap


def safe_name(value: str, option: str) -> str:
    """A name that becomes part of a path or a file name (a proxy run, --scores, a notebook and its -p values):
    letters, digits, '_', '.', '-', not starting with '.' (no '/', no '..'). Checked here, where it is used, not
    only by `easycore check` (`dvc repro -s` skips check)."""
    from easycore.config import ConfigError, SAFE_NAME

    if not isinstance(value, str) or not re.fullmatch(SAFE_NAME, value):
        raise ConfigError(f"{option} {value!r} is not allowed; use letters, digits, '_', '.', '-' (not starting with "
                          f"'.', no '/')")
    return value


def _scores(value: str, params) -> str:
    """--scores of a training / evaluation run: main, none, or a declared transfer proxy."""
    from easycore.pipeline import runs
    from easycore.config import ConfigError

    safe_name(value, "--scores")
    if value not in ("main", runs.NONE, *params.proxy.transfer_models):
        raise ConfigError(f"--scores {value!r} is not allowed; use main, {runs.NONE} or one of proxy.transfer_models "
                          f"{params.proxy.transfer_models}")
    return value


def _dvc_stage():
    from easycore.pipeline import runs

    return os.environ.get(runs.DVC_STAGE)


def _recorded(params, cmd: str) -> None:
    """A `--dvc` select / train / eval stage runs only under the params its dvc.lock entry records: those of
    runs/params/<family>.json (deps.check_recorded; `dvc repro -s` skips the check stage that writes it)."""
    from easycore.pipeline.deps import check_recorded

    stage = _dvc_stage() or ""
    family = {"select": "select", "eval": "eval", "proxy": "proxy"}.get(cmd) or (
        "train_adaptive" if stage.startswith("train_adaptive@") else "train")
    check_recorded(params, family)


def _group(args, params):
    """The runs named by --method/--fraction/--scores/--mode and --seed (default: every seed the params declare for
    that group, else every seed of train.seeds); with --dvc, the group of the DVC stage being run (its seeds), after
    checking the params are those the stage is recorded under (_recorded)."""
    from easycore.pipeline import runs
    from easycore.config import ConfigError

    if args.dvc:
        if args.seed is not None:
            raise ConfigError("--dvc runs the whole group of its stage: no --seed")
        group = runs.expected_groups(params)[runs.group_for_stage(params, _dvc_stage())]
        _recorded(params, args.cmd)
        return group
    if args.method is None or args.fraction is None or args.mode is None:
        raise ConfigError("give --method, --fraction and --mode (or --model-path/--indices/--full with --out)")
    group = runs.Group(_scores(args.scores, params), args.method, args.fraction, args.mode)
    declared = runs.expected_groups(params).get(group)
    seeds = args.seed if args.seed is not None else [r.seed for r in declared] if declared else params.train.seeds
    return group.runs(dict.fromkeys(seeds))


def _out_of_memory(e: BaseException) -> bool:
    """An allocation failure (host MemoryError, torch's CPU allocator or CUDA out of memory), not another error."""
    if isinstance(e, MemoryError):
        return True
    import torch

    return isinstance(e, torch.OutOfMemoryError) or "can't allocate memory" in str(e) or "out of memory" in str(e)


def _subparser(ap: argparse.ArgumentParser, cmd: str) -> argparse.ArgumentParser:
    (sub,) = [a for a in ap._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices[cmd]


def parse(argv=None) -> argparse.Namespace:
    """Parse argv; every mistake raises UsageError with one line (and a "did you mean" for near misses)."""
    ap = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args, extra = ap.parse_known_args(argv)
    except UsageError as e:
        m = re.match(r"argument (COMMAND|[-\w/ ]+): invalid choice: '([^']*)' \(choose from (.*)\)$", str(e))
        if m:
            choices = [c.strip(" '") for c in m.group(3).split(",")]
            raise UsageError(e.prog, f"argument {m.group(1)}: invalid choice: {m.group(2)!r}"
                                     f"{did_you_mean(m.group(2), choices)}") from None
        raise
    sp = _subparser(ap, args.cmd)
    if extra:
        opts = [o for a in sp._actions for o in a.option_strings]
        bad = next((x for x in extra if x.startswith("-")), extra[0])
        hint = did_you_mean(bad.split("=")[0], opts) if bad.startswith("-") else ""
        raise UsageError(sp.prog, f"unrecognized arguments: {' '.join(extra)}{hint}")
    for dest, (kind, where) in _REGISTRY_OPTS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if args.cmd == "select" and dest == "method":
            kind, where = _SELECT_METHODS
        names = _names(kind, **where)
        if value not in names:
            raise UsageError(sp.prog, f"argument --{dest}: invalid choice: {value!r}{did_you_mean(value, names)} "
                                      f"(choose from {', '.join(names)})")
    return args


def methods_table(width: int | None = None) -> str:
    """The coreset methods as a plain terminal table (name, kind, ranks by, keeps, rule), wrapped to `width`
    (default: the terminal's, at least 80)."""
    import shutil
    import textwrap

    from easycore.registry import registry

    keep_txt = {"low": "lowest", "high": "highest", "custom": "custom", "adaptive": "in training", "all": "all"}
    rows = [(n, e.kind, e.score or "-", keep_txt[e.keep], e.doc) for n, e in registry("methods").items()]
    head = ("method", "kind", "ranks by", "keeps", "rule")
    w = [max(len(r[i]) for r in rows + [head]) for i in range(4)]
    width = width or max(80, shutil.get_terminal_size((100, 24)).columns)
    rest = max(20, width - sum(w) - 2 * 4)
    lines = []
    for r in [head] + rows:
        doc = textwrap.wrap(r[4], rest) or [""]
        lines.append("  ".join(c.ljust(w[i]) for i, c in enumerate(r[:4])) + "  " + doc[0])
        lines += [" " * (sum(w) + 2 * 4) + d for d in doc[1:]]
        if r is head:
            lines.append("  ".join("-" * x for x in w) + "  " + "-" * min(rest, 40))
    return "\n".join(ln.rstrip() for ln in lines) + "\n"


def _entry(cmd: str):
    """The function a stage command runs (ENTRY), imported only for that command."""
    import importlib

    module, name = ENTRY[cmd].split(":")
    return getattr(importlib.import_module(module), name)


def exit_on_sigterm() -> None:
    """Let SIGTERM (pkill, a Slurm or `timeout` limit, torchrun tearing a group down) end the command the way Ctrl-C
    does: `finally` blocks run, so an interrupted atomic write deletes its temp file instead of leaving a
    `.name.*.tmp` file inside an output folder that DVC would cache or git would commit. Exit status 128 + 15."""
    import signal

    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def main(argv=None) -> int:
    if argv is None:                     # the command line itself (not a test calling main in its own process)
        exit_on_sigterm()
    try:
        args = parse(argv)
    except UsageError as e:
        print(f"{e.prog}: error: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from easycore.config import ConfigError, load_params
    from easycore.data.base import DataError
    from easycore.store import ArtifactError
    from easycore.core.train import NonFiniteLoss

    cmd = {"score": "proxy"}.get(args.cmd, args.cmd)
    try:
        if cmd == "methods":
            print(_entry("methods")() if args.markdown else methods_table(), end="")
            return 0
        if cmd == "tables":
            return _entry("tables")(args.docs)
        if cmd == "adopt":
            return _entry("adopt")(args.clone, args.profile)
        if cmd not in ("proxy", "train") and int(os.environ.get("WORLD_SIZE") or 1) > 1:
            # only training is sharded: eval (and every other command) would do all of its work on every rank
            raise ConfigError(f"easycore {args.cmd} runs in one process: run it without torchrun "
                              f"(WORLD_SIZE={os.environ['WORLD_SIZE']}); only proxy and train use several processes")
        overrides = list(args.overrides)
        if cmd in ("notebook", "reports") and overrides:
            raise ConfigError(f"{cmd}: --set is not supported (a report reads its params file as the pipeline "
                              "ran it); use --params with another file, or -p KEY VALUE for notebook parameters")
        if cmd == "notebook":
            safe_name(args.name, "notebook")
            for key, value in args.parameter:
                safe_name(key, "-p key")
                safe_name(value, f"-p {key}")     # the values name the executed copy
            if args.outcomes:
                args.outcomes = inside_repo(args.outcomes, "--outcomes")
        if getattr(args, "download", False):
            overrides.append("data.download=true")
        params = load_params(args.params, overrides)
        progress = not args.quiet
        fn = _entry(cmd)
        if cmd in ("check", "autoattack"):
            fn(params) if cmd == "check" else fn(params, progress=progress)
        elif cmd == "prepare":
            fn(params, Path(args.out), verify=args.verify)
        elif cmd == "source":
            fn(params, Path(args.out), progress=progress)
        elif cmd == "proxy":
            if args.dvc:
                from easycore.pipeline import runs
                args.name = runs.proxy_for_stage(params, _dvc_stage())
                _recorded(params, "proxy")
            name = safe_name(args.name, "--name")
            if args.dvc and (args.seed is not None or args.out):
                raise ConfigError("--dvc makes every replicate of its stage's proxy run: no --seed/--out")
            if args.seed is None and not args.out:
                fn(params, name, prepared=Path(args.prepared), progress=progress)
            else:
                _entry("proxy_one")(params, name, args.out and Path(args.out), seed=args.seed or 0, prepared=Path(args.prepared),
                   progress=progress)
        elif cmd == "select":
            if args.dvc:
                from easycore.pipeline import runs
                if args.method is not None or args.fraction is not None or args.out:
                    raise ConfigError("--dvc makes every coreset of its stage's proxy run: no --method/--fraction/--out")
                args.scores = runs.scores_for_stage(params, _dvc_stage())
                _recorded(params, "select")
            safe_name(args.scores, "--scores")
            if args.method is None:
                if args.fraction is not None or args.out:
                    raise ConfigError("--fraction/--out go with --method (without it: every coreset of --scores)")
                fn(params, args.scores, prepared=Path(args.prepared))
                return 0
            if args.fraction is None or not 0 < args.fraction < 1:
                raise ConfigError(f"--fraction {args.fraction!r} is not allowed; must be in (0, 1)")
            _entry("select_one")(params, args.method, args.fraction, args.scores, args.out and Path(args.out),
                                 seed=args.seed, prepared=Path(args.prepared))
        elif cmd == "train":
            if args.indices or args.full:
                if not args.out:
                    raise ConfigError("--indices/--full need --out")
                if args.mode is None:
                    raise ConfigError("give --mode")
                if args.seed is not None and len(args.seed) > 1:
                    raise ConfigError("--indices/--full train one run: give one --seed")
                _entry("train_files")(params, Path(args.out), mode=args.mode, seed=(args.seed or [0])[0],
                                      indices=None if args.full else Path(args.indices), model=args.model,
                                      prepared=Path(args.prepared), progress=progress)
            else:
                if args.out or args.model or args.prepared != "data/prepared":
                    raise ConfigError("--out/--model/--prepared go with --indices or --full; a named run uses the "
                                      "pipeline's paths")
                fn(params, _group(args, params), progress=progress)
        elif cmd == "eval":
            if args.model_path:
                if not args.out:
                    raise ConfigError("--model-path needs --out")
                _entry("eval_files")(params, Path(args.model_path), Path(args.out), prepared=Path(args.prepared),
                                     progress=progress)
            else:
                fn(params, _group(args, params), progress=progress)
        elif cmd == "notebook":
            fn(args.name, dict(args.parameter), out=args.out and Path(args.out), params_path=args.params,
               outcomes=args.outcomes)
        elif cmd == "reports":
            fn(args.params, only=args.only)
        return 0
    except (ConfigError, DataError, ArtifactError, NonFiniteLoss) as e:
        msg = " ".join(str(e).split("\n"))  # one line, even when a wrapped library message has several
        print(f"easycore {args.cmd}: error: {msg}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as e:
        if not _out_of_memory(e):
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        tried = re.search(r"tried to allocate [0-9.]+ ?[A-Za-z]*", first)
        print(f"easycore {args.cmd}: error: out of memory ({tried.group(0) if tried else first[:200]}); lower the "
              f"sizes in the params (data.n_per_class, batch sizes, eval.n_test) or use a larger machine",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"easycore {args.cmd}: interrupted; run the same command again to resume from the last saved epoch",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
