"""GPU check (`make gpu-check`): the CUDA tests, the paper-scale epoch time, PGD-20 against torchattacks and a 2-epoch
demo pipeline on CUDA, within one time budget (default 15 min on one H100), then ONE summary table.

    python -m benchmarks.gpu_check [--budget 900] [--parts test_cuda,epoch_time,attack_speed,demo] [--out FILE]
                                   [--log-dir DIR] [--rehearse]

Parts, in this order, each a subprocess in its own process group (a crash, a hang or an out-of-memory kill of one
part is that part's FAILED / TIMEOUT row; the others still run):
  test_cuda     pytest tests/test_cuda.py (CUDA paths against the CPU reference)
  epoch_time    benchmarks.epoch_time: ResNet-18 on full CIFAR-10, standard and TRADES-10, bf16 + channels_last,
                without (`default`) and with torch.compile (`compile`); last of 2 epochs timed; PGD-20 eval rate
  attack_speed  benchmarks.attack_speed on CUDA: PGD-20 images/s, easycore.core.attacks.pgd vs torchattacks.PGD
                (ResNet-18, fp32 both, same starts), at 8/255 and 4/255
  concurrency   benchmarks.concurrent_runs: models per hour for a group of cnn_tiny runs and of ResNet-18 runs on a
                0.1 coreset of CIFAR-10, one at a time vs concurrent worker processes (runtime.concurrent automatic)
  demo          `dvc repro` of the demo pipeline (params.yaml) in a temporary git + DVC copy of the repo, with
                proxy.epochs = train.epochs = 2 and runtime.device = cuda; data from EASYCORE_DATA or
                ../shared/data, else synthetic data (the row says so)
Time limits: each part gets its share of --budget (the proportions of BUDGETS; the default 900 s gives BUDGETS) plus
whatever earlier parts left unused, never past the overall deadline (--budget seconds after the start, less a reserve
for the table), so the whole check ends within --budget.
A part's output goes to <log-dir>/<part>.log (and the benchmarks' sections to <part>.md); the summary table, with the
parts' own sections below it, is printed and appended to --out (default reports/benchmarks.md).
Without CUDA it refuses in one line (exit 2). `--rehearse` runs the same plumbing on a CPU at smoke sizes (the
benchmarks' --quick, a tiny synthetic pipeline; numbers meaningless, printed only unless --out is given).
Exit status: 0 when every part passed, 1 otherwise, 2 when refused.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from benchmarks._common import DEFAULT_OUT, REPO, data_root, table
from easycore.data.sources import status_clean

TOTAL_BUDGET = 15 * 60      # seconds: the whole check on one H100
RESERVE = 30                # of the budget, kept for the parent's start-up and the table
MIN_PART_S = 5              # a part the deadline would cut below this (and below its own budget) is skipped
BUDGETS = {"test_cuda": 110, "epoch_time": 330, "attack_speed": 80, "concurrency": 130,
           "demo": 220}   # sum = TOTAL - RESERVE
PARTS = tuple(BUDGETS)


# ----------------------------------------------------------------------------- running parts
def kill_group(p: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group of `p` (started with start_new_session: the part and everything it started), SIGKILL
    after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(p.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            p.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass
class Part:
    """One line of the table: a command run in REPO with a time budget; `summarize(log, rc)` -> key numbers."""
    name: str
    what: str
    cmd: list[str]
    budget_s: float
    summarize: Callable[[str, int], str] = lambda log, rc: ""
    env: dict = field(default_factory=dict)
    section: Optional[Path] = None        # Markdown section the part writes (included below the table)


@dataclass
class Outcome:
    name: str
    what: str
    status: str                           # "ok" | "FAILED (exit N)" | "TIMEOUT" | "SKIPPED (...)"
    seconds: float
    limit_s: float
    summary: str
    log: Optional[Path] = None
    section: Optional[Path] = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def run_part(part: Part, limit_s: float, log_dir: Path, *, echo: bool = True) -> Outcome:
    """Run `part` for at most `limit_s` seconds; never raises for the part's own failures."""
    log_path = Path(log_dir) / f"{part.name}.log"
    t0 = time.monotonic()
    timed_out = False
    try:
        p = subprocess.Popen(part.cmd, cwd=REPO, env=dict(os.environ, **part.env), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as e:
        return Outcome(part.name, part.what, "FAILED (could not start)", 0.0, limit_s, f"{type(e).__name__}: {e}",
                       None, part.section)
    chunks: list[bytes] = []

    def pump():
        with open(log_path, "wb") as f:
            for line in iter(p.stdout.readline, b""):
                f.write(line)
                f.flush()
                chunks.append(line)
                if echo:
                    text = line.decode(errors="replace").rsplit("\r", 1)[-1].rstrip("\n")
                    if text.strip():
                        print(f"[{part.name}] {text}", flush=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        rc = p.wait(timeout=max(limit_s, 0.0))
    except subprocess.TimeoutExpired:
        timed_out = True
        kill_group(p)
        rc = p.returncode if p.returncode is not None else -9
    reader.join(timeout=10)
    seconds = time.monotonic() - t0
    text = b"".join(chunks).decode(errors="replace").replace("\r", "\n")  # progress bars: \r-separated updates
    try:
        summary = part.summarize(text, rc)
    except Exception as e:  # noqa: BLE001 - a summarizer bug must not lose the row
        summary = f"(no summary: {type(e).__name__}: {e})"
    if timed_out:
        status = "TIMEOUT"
        summary = f"stopped at the {limit_s:.0f} s limit" + (f"; so far: {summary}" if summary else "")
    elif rc != 0:
        status = f"FAILED (exit {rc})"
        tail = [ln for ln in text.strip().splitlines() if ln.strip()][-1:]
        summary = (summary + "; " if summary else "") + (f"last line: {tail[0][:160]}" if tail else "no output")
    else:
        status = "ok"
    return Outcome(part.name, part.what, status, seconds, limit_s, summary, log_path, part.section)


def run_parts(parts: Sequence[Part], log_dir: Path, *, budget_s: float, echo: bool = True) -> list[Outcome]:
    """Run the parts in order. Part i's limit = its budget + what earlier parts left unused, capped by the overall
    deadline (`budget_s` from now); a part the deadline cuts below min(MIN_PART_S, its budget) is SKIPPED."""
    deadline = time.monotonic() + budget_s
    carry, out = 0.0, []
    for part in parts:
        left = deadline - time.monotonic()
        limit = min(part.budget_s + carry, left)
        if limit < min(MIN_PART_S, part.budget_s):
            out.append(Outcome(part.name, part.what, "SKIPPED (no time left)", 0.0, max(limit, 0.0), "", None, None))
            continue
        if echo:
            print(f"\n[gpu-check] === {part.name} (limit {limit:.0f} s): {' '.join(part.cmd)}", flush=True)
        o = run_part(part, limit, log_dir, echo=echo)
        carry = max(0.0, part.budget_s + carry - o.seconds)
        out.append(o)
        if echo:
            print(f"[gpu-check] {part.name}: {o.status} in {o.seconds:.0f} s; {o.summary}", flush=True)
    return out


def summary_table(outcomes: Sequence[Outcome]) -> str:
    """The Markdown summary: one row per part (status, seconds used of its limit, key numbers)."""
    rows = [[o.name, o.status, f"{o.seconds:.0f} / {o.limit_s:.0f}", (o.summary or "-").replace("|", "\\|")]
            for o in outcomes]
    return table(["part", "status", "s used / limit", "key numbers"], rows)


def report_body(outcomes: Sequence[Outcome], *, budget_s: float, wall_s: float, log_dir: Path, note: str = "") -> str:
    """Summary table + totals + the sections the benchmark parts wrote (headings demoted to ###)."""
    n_ok = sum(o.ok for o in outcomes)
    lines = [note] if note else []
    lines += [summary_table(outcomes), "",
              f"{n_ok}/{len(outcomes)} parts passed; {wall_s:.0f} s wall for a budget of {budget_s:.0f} s (a part's "
              f"limit is its share plus what earlier parts left); logs in `{log_dir}`."]
    for o in outcomes:
        if o.section is not None and Path(o.section).exists():
            text = Path(o.section).read_text()
            if "\n## " in "\n" + text:  # drop the file header before the first section heading
                text = text[("\n" + text).index("\n## "):].lstrip("\n")
            text = re.sub(r"^## ", "### ", text, flags=re.M)
            lines += ["", f"Part `{o.name}`, its own section:", "", text.rstrip()]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- summaries of the parts' logs
def summarize_pytest(log: str, rc: int) -> str:
    m = re.findall(r"(\d+ (?:passed|failed|skipped|errors?|xfailed|xpassed|deselected)(?:, \d+ \w+)*) in [\d.]+s", log)
    return m[-1] if m else ""


_EPOCH = re.compile(r"^\s+(\w+)/(\w+): last epoch ([\d.]+)s -> full-data epoch ([\d.]+)s \((measured|extrapolated)\)",
                    re.M)


def summarize_epoch_time(log: str, rc: int) -> str:
    """'s/epoch (full CIFAR-10): standard 3.9, trades 38.0 [default]; ... ; PGD-20 eval N img/s' from the log."""
    by_variant: dict[str, list[str]] = {}
    extrapolated = False
    for mode, variant, _last, full, how in _EPOCH.findall(log):
        by_variant.setdefault(variant, []).append(f"{mode} {float(full):.1f}")
        extrapolated |= how == "extrapolated"
    parts = [f"{', '.join(v)} [{k}]" for k, v in by_variant.items()]
    out = ("s/epoch" + (" (EXTRAPOLATED)" if extrapolated else " (full CIFAR-10)") + ": " + "; ".join(parts)) if parts else ""
    m = re.search(r"\*\*([\d.]+) images/s\*\*", log)
    if m:
        out += ("; " if out else "") + f"PGD-20 eval {float(m.group(1)):.0f} img/s"
    if "FALLBACK" in log:  # benchmarks._common.load_data: CIFAR-10 absent, synthetic data of the same size
        out += " (SYNTHETIC data: CIFAR-10 not found)"
    return out


_ATTACK_ROW = re.compile(r"^\| (easycore\.pgd|torchattacks\.PGD) \| ([\d.]+)/255 \| ([\d.e+]+) \|", re.M)
_ATTACK_RATIO = re.compile(r"^- eps ([\d.]+)/255: throughput ratio easycore/torchattacks = ([\d.]+)x "
                           r"\(robust accuracy ([\d.]+) vs ([\d.]+)", re.M)


def summarize_attack_speed(log: str, rc: int) -> str:
    """'8/255: easycore 2400 vs torchattacks 1900 img/s (1.26x, acc 0.0 vs 0.0); ...' from the printed section."""
    rate = {(a, e): float(r) for a, e, r in _ATTACK_ROW.findall(log)}
    bits = []
    for eps, ratio, acc_ours, acc_theirs in _ATTACK_RATIO.findall(log):
        ours, theirs = rate.get(("easycore.pgd", eps)), rate.get(("torchattacks.PGD", eps))
        rates = f"easycore {ours:.0f} vs torchattacks {theirs:.0f} img/s, " if ours and theirs else ""
        bits.append(f"{eps}/255: {rates}ratio {ratio}x (robust acc {acc_ours} vs {acc_theirs})")
    m = re.search(r"attack_speed: (\w+), PGD-(\d+)", log)
    head = f"{m.group(1)} PGD-{m.group(2)}: " if m else ""
    return head + "; ".join(bits) if bits else ""


def summarize_concurrency(log: str, rc: int) -> str:
    """'cnn_tiny 2.9x, resnet18 1.4x models/hour' from the printed sections."""
    models = re.findall(r"runs of `(\w+)`", log)
    ratios = re.findall(r"ratio concurrent / one at a time: \*\*([\d.]+)x\*\*", log)
    return ", ".join(f"{m} {r}x" for m, r in zip(models, ratios)) + (" models/hour, concurrent vs one at a time"
                                                                     if ratios else "")


def summarize_demo(log: str, rc: int) -> str:
    """From the demo child's DEMO-* lines (partial progress when it was stopped)."""
    data = re.search(r"^DEMO-DATA (.*)$", log, re.M)
    total = re.search(r"^DEMO-STAGES (\d+)$", log, re.M)
    res = re.search(r"^DEMO-RESULT (\{.*\})$", log, re.M)
    note = f" ({data.group(1)})" if data else ""
    if res:
        r = json.loads(res.group(1))
        return (f"{r['ran']}/{r['stages']} stages ran in {r['seconds']:.0f} s, {r['evaluated']} runs evaluated, "
                f"dvc status {'clean' if r['clean'] else 'NOT clean'}; {r['epochs']} epochs on {r['device']}{note}")
    from benchmarks._pipeline import stages_ran

    n = len(stages_ran(log))
    return f"{n}/{total.group(1) if total else '?'} stages started{note}" if (n or data) else ""


# ----------------------------------------------------------------------------- the demo part (a child process)
def demo_child(work: Path, *, device: str, epochs: int, tiny: bool) -> int:
    """`dvc repro` of the demo pipeline in a new git + DVC repo at `work`, proxy/train epochs = `epochs`, on `device`.
    Prints DEMO-DATA, DEMO-STAGES and finally DEMO-RESULT {json} for the parent's table."""
    from benchmarks._pipeline import TINY, make_repo, merge, pipeline_env, repo_params, run, stage_names, stages_ran

    over = merge(TINY, {}) if tiny else {}
    over = merge(over, {"proxy": {"epochs": epochs}, "train": {"epochs": epochs}, "runtime": {"device": device}})
    params = repo_params(over)
    root = data_root().resolve()
    dataset = params["data"]["dataset"]
    if dataset != "synthetic":
        from easycore.data.loaders import load_dataset
        from easycore.data.base import DataError

        try:
            load_dataset(dataset, "test", root, n_per_class=1)
            data_note = f"{dataset} from {root}"
        except (DataError, OSError) as e:
            params["data"]["dataset"] = "synthetic"
            data_note = f"SYNTHETIC data: {dataset} not found under {root} ({str(e)[:80]}...)"
    else:
        data_note = "synthetic data (tiny rehearsal params)" if tiny else "synthetic data (params.yaml)"
    print(f"DEMO-DATA {data_note}", flush=True)
    env = pipeline_env(str(work), {"EASYCORE_DATA": str(root)})
    make_repo(work, params, env)
    stages = stage_names(work, env)
    print(f"DEMO-STAGES {len(stages)}", flush=True)
    t0 = time.perf_counter()
    r = run(["dvc", "repro"], work, env, check=False, echo=True)
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        print(f"DEMO: dvc repro failed (exit {r.returncode})", flush=True)
        return r.returncode
    clean = run(["dvc", "status", "--json"], work, env, check=False)
    result = {"stages": len(stages), "ran": len(stages_ran(r.stdout)), "seconds": seconds, "device": device,
              "epochs": epochs, "evaluated": len(list((work / "runs" / "eval").rglob("metrics.json"))),
              "clean": clean.returncode == 0 and status_clean(clean.stdout)}
    print("DEMO-RESULT " + json.dumps(result), flush=True)
    return 0 if result["clean"] else 1


# ----------------------------------------------------------------------------- the plan
def part_budgets(names: Sequence[str], budget_s: float) -> dict[str, float]:
    """Each named part's share of `budget_s` (less RESERVE), in the proportions of BUDGETS: the default budget
    gives BUDGETS, a smaller one (a shorter device lease) shrinks every part alike instead of starving the last."""
    total = sum(BUDGETS[n] for n in names)
    return {n: BUDGETS[n] * max(budget_s - RESERVE, 0.0) / total for n in names}


def build_parts(names: Sequence[str], log_dir: Path, *, rehearse: bool,
                budgets: Optional[dict] = None) -> list[Part]:
    """The parts to run (`budgets`: seconds per part, default BUDGETS). A rehearsal runs the same commands with the
    benchmarks' --quick and --device cpu appended (so the GPU arguments are parsed too), and a tiny synthetic demo
    pipeline of 1 epoch on the CPU."""
    budgets = dict(BUDGETS, **(budgets or {}))
    py = sys.executable
    smoke = ["--quick", "--device", "cpu"] if rehearse else []
    env = {"PYTHONPATH": os.pathsep.join([str(REPO)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))}
    if rehearse:
        env["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS", "1")
    all_parts = {
        "test_cuda": Part("test_cuda", "tests/test_cuda.py", [py, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                                                 "tests/test_cuda.py"],
                          budgets["test_cuda"], summarize_pytest, env),
        "epoch_time": Part("epoch_time", "ResNet-18 full CIFAR-10 epoch, standard + TRADES-10, bf16 + NHWC, +- compile",
                           [py, "-m", "benchmarks.epoch_time", "--device", "cuda", "--model", "resnet18",
                            "--modes", "standard,trades", "--steps", "10", "--variants", "default,compile",
                            "--out", str(log_dir / "epoch_time.md")] + smoke,
                           budgets["epoch_time"], summarize_epoch_time, env, log_dir / "epoch_time.md"),
        "attack_speed": Part("attack_speed", "PGD-20 images/s vs torchattacks on CUDA",
                             [py, "-m", "benchmarks.attack_speed", "--device", "cuda", "--model", "resnet18",
                              "--steps", "20", "--n", "2048", "--batch-size", "512", "--eps", "8,4", "--rounds", "3",
                              "--out", str(log_dir / "attack_speed.md")] + smoke,
                             budgets["attack_speed"], summarize_attack_speed, env, log_dir / "attack_speed.md"),
        "concurrency": Part("concurrency", "models/hour, one at a time vs concurrent (cnn_tiny, resnet18; f=0.1)",
                            [py, "-c", "import sys; from benchmarks import concurrent_runs as c; "
                             "sys.exit(max(c.main(a + sys.argv[1:]) for a in (['--model', 'cnn_tiny', '--runs', '8'], "
                             "['--model', 'resnet18', '--runs', '4'])))",
                             "--device", "cuda", "--epochs", "2", "--out", str(log_dir / "concurrency.md")] + smoke,
                            budgets["concurrency"], summarize_concurrency, env, log_dir / "concurrency.md"),
        "demo": Part("demo", "dvc repro of the demo pipeline, 2 epochs, CUDA",
                     [py, "-m", "benchmarks.gpu_check", "--demo-child", str(log_dir / "demo-repo"),
                      "--device", "cpu" if rehearse else "cuda", "--epochs", "1" if rehearse else "2"]
                     + (["--tiny"] if rehearse else []),
                     budgets["demo"], summarize_demo, env),
    }
    return [all_parts[n] for n in names]


def refuse_without_cuda() -> Optional[str]:
    """None when torch sees a CUDA GPU, else the one-line refusal."""
    import torch

    if torch.cuda.is_available():
        return None
    return (f"gpu-check: refused: no CUDA GPU visible to torch {torch.__version__} (torch.cuda.is_available() is "
            f"False); run it on a GPU machine, or add --rehearse to check the plumbing on this CPU")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0],
                                 epilog="\n".join(__doc__.strip().splitlines()[1:]),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=TOTAL_BUDGET, help="seconds for the whole check")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {list(PARTS)}, in order")
    ap.add_argument("--out", default=None, help=f"Markdown file to append the summary to ('' = print only; default "
                    f"{DEFAULT_OUT.relative_to(REPO)}, print only with --rehearse)")
    ap.add_argument("--log-dir", default=None, help="where the parts' logs go (default: a new temporary folder, kept)")
    ap.add_argument("--rehearse", action="store_true", help="CPU rehearsal at smoke sizes (numbers meaningless)")
    ap.add_argument("--demo-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    ap.add_argument("--epochs", type=int, default=2, help=argparse.SUPPRESS)
    ap.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.demo_child is not None:
        return demo_child(Path(args.demo_child), device=args.device, epochs=args.epochs, tiny=args.tiny)

    names = [s.strip() for s in args.parts.split(",") if s.strip()]
    unknown = sorted(set(names) - set(PARTS))
    if unknown or not names:
        ap.error(f"unknown part(s) {unknown}; choose from {list(PARTS)}")
    if not args.rehearse:
        why = refuse_without_cuda()
        if why:
            print(why, file=sys.stderr)
            return 2
    out = args.out if args.out is not None else ("" if args.rehearse else str(DEFAULT_OUT))
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="easycore-gpu-check-")).resolve()
    log_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    outcomes = run_parts(build_parts(names, log_dir, rehearse=args.rehearse,
                                     budgets=part_budgets(names, args.budget)), log_dir,
                         budget_s=max(args.budget - RESERVE, 0.0))
    wall = time.monotonic() - t0
    title = "GPU check (`make gpu-check`)" + (" [--rehearse on CPU: smoke sizes, numbers NOT meaningful]"
                                             if args.rehearse else "")
    body = report_body(outcomes, budget_s=args.budget, wall_s=wall, log_dir=log_dir)
    from benchmarks._report import append_section, machine_description

    print(f"\n## {title}\n\nMachine: {machine_description()}\n\n{summary_table(outcomes)}\n")
    if out:
        append_section(out, title, body)
        print(f"(appended to {out}, with the parts' own sections)")
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
