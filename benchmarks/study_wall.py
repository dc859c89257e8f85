"""A finished (or running) `dvc repro`'s cost per part, from the timings its runs logged: what a study reports.

    python -m benchmarks.study_wall ../easycore-study-v2/runs/timings            # print the table
    python -m benchmarks.study_wall <runs/timings> --out reports/benchmarks.md    # and append it there

Every run writes runs/timings/<part>/.../<name>.json (stages.write_timing: its `seconds`, and `ended`, the UTC time it
ended; an older file without `ended` is read by its modification time). A run's interval is [ended - seconds, ended].
Per part (proxy, train, eval, autoattack): the runs, their process seconds summed (two runs at once count twice),
and the **wall time**: the length of the union of its runs' intervals (runs at once count once). "outside the runs"
is the span from the first run's start to the last run's end less the union of every run's interval: stage starts,
DVC, selection and the report stages in between. The report stages after the last run, and the check / prepare
stages before the first, are not timed here: the command's own wall time (`time make profile ...`) is the total.
A second table splits the runs' process time by piece where they logged one (the optimiser steps, the exact AIGN
pass, an adaptive method's re-selections, a proxy's features / DeepFool pass, an evaluation's attacks): where a part's
minutes go.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
from pathlib import Path

PARTS = {"proxy": "proxies", "train": "training", "eval": "evaluation", "autoattack": "AutoAttack"}


def intervals(timings) -> dict[str, list[tuple[float, float]]]:
    """{part folder: [(start, end) in epoch seconds]} of every timing file under `timings`."""
    out: dict[str, list[tuple[float, float]]] = {}
    root = Path(timings)
    for f in sorted(root.rglob("*.json")):
        rel = f.relative_to(root)
        if len(rel.parts) < 2:
            continue
        rec = json.loads(f.read_text())
        if "seconds" not in rec:
            continue
        end = _dt.datetime.fromisoformat(rec["ended"]).timestamp() if "ended" in rec else f.stat().st_mtime
        out.setdefault(rel.parts[0], []).append((end - float(rec["seconds"]), end))
    return out


def union_length(spans) -> float:
    """Seconds covered by the union of the (start, end) intervals."""
    total, cur_s, cur_e = 0.0, None, None
    for s, e in sorted(spans):
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    return total + (cur_e - cur_s if cur_e is not None else 0.0)


def cost_table(timings) -> str:
    """The Markdown table of the module docstring."""
    parts = intervals(timings)
    if not parts:
        raise SystemExit(f"no run timings under {timings}")
    every = [iv for spans in parts.values() for iv in spans]
    first, last = min(s for s, _ in every), max(e for _, e in every)
    stamp = lambda t: _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")  # noqa: E731
    rows = ["| part | runs | process min | wall min | from | to |", "|---|---|---|---|---|---|"]
    order = [p for p in PARTS if p in parts] + sorted(set(parts) - set(PARTS))
    for p in order:
        spans = parts[p]
        rows.append(f"| {PARTS.get(p, p)} | {len(spans)} | {sum(e - s for s, e in spans) / 60:.1f} | "
                    f"{union_length(spans) / 60:.1f} | {stamp(min(s for s, _ in spans))[11:]} | "
                    f"{stamp(max(e for _, e in spans))[11:]} |")
    covered = union_length(every)
    rows.append(f"| outside the runs (stage starts, DVC, selection, reports in between) | - | - | "
                f"{(last - first - covered) / 60:.1f} | | |")
    rows.append(f"| **first run's start to last run's end** | {len(every)} | "
                f"{sum(e - s for s, e in every) / 60:.1f} | **{(last - first) / 60:.1f}** | {stamp(first)} | "
                f"{stamp(last)} |")
    return "\n".join(rows)


def pieces_table(timings) -> str:
    """Inside the runs: per part, the process minutes of each piece the runs logged (stages.pieces_of: the optimiser
    steps, the exact AIGN pass, an adaptive method's re-selections, a proxy's features / DeepFool pass, an
    evaluation's attacks), summed over
    its runs, and each piece's share of the part's process time. Empty when no run logged pieces (older runs)."""
    sums: dict[str, dict[str, list]] = {}
    totals: dict[str, float] = {}
    for f in sorted(Path(timings).rglob("*.json")):
        rel = f.relative_to(timings)
        rec = json.loads(f.read_text())
        if len(rel.parts) < 2 or "pieces" not in rec:
            continue
        part = rel.parts[0]
        totals[part] = totals.get(part, 0.0) + float(rec["seconds"])
        for piece, sec in rec["pieces"].items():
            acc = sums.setdefault(part, {}).setdefault(piece, [0, 0.0])
            acc[0] += 1
            acc[1] += float(sec)
    if not sums:
        return ""
    rows = ["| part | piece | runs | process min | share |", "|---|---|---|---|---|"]
    for part in [p for p in PARTS if p in sums] + sorted(set(sums) - set(PARTS)):
        for piece, (n, sec) in sorted(sums[part].items(), key=lambda kv: -kv[1][1]):
            rows.append(f"| {PARTS.get(part, part)} | {piece} | {n} | {sec / 60:.1f} | "
                        f"{100 * sec / max(totals[part], 1e-9):.0f} % |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("timings", help="a run's runs/timings folder")
    ap.add_argument("--title", default="study_wall: cost per part", help="the section's title with --out")
    ap.add_argument("--out", default=None, help="append the table to this Markdown file (a dated section)")
    args = ap.parse_args(argv)
    text = cost_table(args.timings)
    inside = pieces_table(args.timings)
    if inside:
        text += "\n\nInside the runs (process time by piece; a part's pieces add up to its runs' seconds):\n\n" + inside
    print(text)
    if args.out:
        from benchmarks._report import append_section

        append_section(args.out, args.title, f"Run timings: `{args.timings}`.\n\n{text}\n", machine=False)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
