"""Smoke run of every speed benchmark (`--quick`: tiny sizes, numbers meaningless): each runs in-process,
writes its Markdown section to a temporary file, and the section carries its ratio line."""
import re
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `benchmarks` is a folder of scripts beside the package, not installed
    sys.path.insert(0, str(REPO))

SCRIPTS = {  # script -> a regex its written section must contain
    "aign_overhead": r"ratio inline/plain = [\d.]+x.*ratio exact/plain = [\d.]+x vs floor 1 \+ pass/epoch = [\d.]+x",
    "train_step": r"ratios vs standard: fgsm_rs [\d.]+x, pgd_at [\d.]+x, trades [\d.]+x",
    "input_pipeline": r"ratio device / tv_pil_w0: iterate [\d.]+x, epoch with \w+ [\d.]+x",
    "memory": r"ratio peak RSS N=160 / N=40 = [\d.]+x",
    "profile_epoch": r"ratio profiled/unprofiled [\d.]+x",
    "attack_speed": r"eps 8/255: throughput ratio easycore/torchattacks = [\d.]+x.*\n- eps 4/255: throughput ratio",
    "epoch_time": r"trades/standard \(default\) = [\d.]+x",
    "dvc_overhead": r"`params:` in every stage / one params file dep: \*\*[\d.]+x\*\*",
    "cpu_speed": r"speed-up vs nhwc \(TRADES step / PGD-20\): nchw [\d.]+x / [\d.]+x, bf16 [\d.]+x / [\d.]+x",
    "eval_bulk": r"ratio stacked / sequential throughput: \*\*[\d.]+x\*\*",
    "concurrent_runs": r"ratio concurrent / one at a time: \*\*[\d.]+x\*\*",
    "regime": r"\| noaug8 \| trades \| 1 \| [\d.]+ \| [\d.]+ \| >= 35 %, no class < 15 % \|",
    "acs_cost": r"ACS / random: time [\d.]+x, forward passes [\d.]+x, backward passes [\d.]+x",
}


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_benchmark_quick(name, tmp_path):
    import importlib

    mod = importlib.import_module(f"benchmarks.{name}")
    out = tmp_path / "b.md"
    threads = torch.get_num_threads()
    assert mod.main(["--quick", "--out", str(out)]) == 0
    assert torch.get_num_threads() == threads, "the script must restore torch's thread count"
    text = out.read_text()
    assert "[--quick smoke run" in text and "Machine: CPU" in text
    assert re.search(SCRIPTS[name], text), text[-1500:]
    if name != "profile_epoch":  # appended via _report.append_section: a dated section
        assert re.search(r"^## .+ \(\d{4}-\d\d-\d\d \d\d:\d\d UTC\)$", text, re.M)
    else:
        assert "| aten::" in text  # the top-ops table


# ----------------------------------------------------------------------------- gpu_check: the CPU-side logic
def _py(code: str) -> list:
    return [sys.executable, "-c", code]


def test_gpu_check_refuses_without_cuda(capsys, tmp_path):
    from benchmarks import gpu_check

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: gpu-check would run")
    out = tmp_path / "b.md"
    assert gpu_check.main(["--out", str(out), "--log-dir", str(tmp_path / "logs")]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and len(cap.err.strip().splitlines()) == 1, cap
    assert cap.err.startswith("gpu-check: refused: no CUDA GPU") and "--rehearse" in cap.err
    assert not out.exists() and not (tmp_path / "logs").exists()  # refused before doing anything


def test_gpu_check_parts_survive_failure_timeout_and_a_broken_summary(tmp_path):
    """A failing part, a hanging part (with a child of its own) and a part whose summarizer raises each get their
    row; the parts after them still run; the hang is stopped at its limit with its whole process group."""
    import os
    import time

    from benchmarks.gpu_check import Part, run_parts

    pidfile = tmp_path / "grandchild.pid"
    hang = ("import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            f"open({str(pidfile)!r}, 'w').write(str(c.pid)); print('started', flush=True); time.sleep(60)")

    def boom(log, rc):
        raise ValueError("bad log")

    parts = [
        Part("hang", "hangs", _py(hang), 1.5, lambda log, rc: log.strip()),
        Part("good", "passes", _py("print('3 passed in 0.10s')"), 30, lambda log, rc: log.strip()),
        Part("bad", "fails", _py("import sys; print('step 1'); print('it broke here'); sys.exit(3)"), 30),
        Part("broken_summary", "passes", _py("print('x')"), 30, boom),
        Part("after", "passes", _py("print('still ran')"), 30, lambda log, rc: log.strip()),
    ]
    t0 = time.monotonic()
    out = run_parts(parts, tmp_path, budget_s=120, echo=False)
    assert [o.status for o in out] == ["TIMEOUT", "ok", "FAILED (exit 3)", "ok", "ok"]
    assert out[0].summary == "stopped at the 2 s limit; so far: started" and 1.4 < out[0].seconds < 15
    assert out[1].summary == "3 passed in 0.10s" and out[1].ok and not out[2].ok
    assert out[2].summary == "last line: it broke here"
    assert out[3].summary.startswith("(no summary: ValueError: bad log")
    assert out[4].summary == "still ran"
    assert (tmp_path / "bad.log").read_text() == "step 1\nit broke here\n"
    # unused budget carries over to the next parts (the hang used all of its own)
    assert out[0].limit_s == 1.5 and out[1].limit_s <= 30 and out[2].limit_s > 30 and out[4].limit_s > 60
    assert time.monotonic() - t0 < 30
    gc = int(pidfile.read_text())
    for _ in range(50):  # the grandchild got SIGTERM with its group (reaped by init shortly after)
        try:
            os.kill(gc, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(gc, 9)
        raise AssertionError("the hanging part's child survived the timeout")


def test_gpu_check_deadline_caps_every_part(tmp_path, monkeypatch):
    from benchmarks import gpu_check
    from benchmarks.gpu_check import Part, run_parts

    monkeypatch.setattr(gpu_check, "MIN_PART_S", 1.0)
    parts = [Part("long", "hangs", _py("import time; time.sleep(60)"), 100),
             Part("next", "never gets time", _py("print(1)"), 100)]
    out = run_parts(parts, tmp_path, budget_s=2, echo=False)
    assert out[0].status == "TIMEOUT" and out[0].limit_s <= 2
    assert out[1].status == "SKIPPED (no time left)"


def test_gpu_check_shares_a_shorter_budget_among_all_parts():
    from benchmarks import gpu_check

    every = list(gpu_check.PARTS)
    assert gpu_check.part_budgets(every, gpu_check.TOTAL_BUDGET) == pytest.approx(gpu_check.BUDGETS)
    short = gpu_check.part_budgets(every, 480)
    assert sum(short.values()) == pytest.approx(480 - gpu_check.RESERVE)
    for n in every:                                  # every part shrinks alike: the last one is not starved
        assert short[n] / gpu_check.BUDGETS[n] == pytest.approx(short["test_cuda"] / gpu_check.BUDGETS["test_cuda"])
    assert gpu_check.part_budgets(["demo"], 300) == pytest.approx({"demo": 300 - gpu_check.RESERVE})
    parts = gpu_check.build_parts(["test_cuda", "demo"], Path("/tmp"), rehearse=True, budgets={"demo": 7.0})
    assert [p.budget_s for p in parts] == [gpu_check.BUDGETS["test_cuda"], 7.0]


def test_gpu_check_summaries_and_table(tmp_path):
    from benchmarks.gpu_check import (Outcome, report_body, summarize_attack_speed, summarize_demo,
                                      summarize_epoch_time, summarize_pytest, summary_table)

    epoch_log = ("epoch_time: resnet18, 50000 training images\n"
                 "  standard/default: last epoch 3.912s -> full-data epoch 3.9s (measured)\n"
                 "  trades/default: last epoch 38.04s -> full-data epoch 38.0s (measured)\n"
                 "  standard/compile: last epoch 3.1s -> full-data epoch 3.1s (measured)\n"
                 "PGD-20 eval throughput (...): **5234.5 images/s** (1.91 s; ...)\n")
    assert summarize_epoch_time(epoch_log, 0) == ("s/epoch (full CIFAR-10): standard 3.9, trades 38.0 [default]; "
                                                  "standard 3.1 [compile]; PGD-20 eval 5234 img/s")
    assert summarize_epoch_time("x FALLBACK: cifar10 not available\n" + epoch_log, 0).endswith(
        "(SYNTHETIC data: CIFAR-10 not found)")
    attack_log = ("attack_speed: resnet18, PGD-20, eps [8.0, 4.0] /255\n"
                  "| easycore.pgd | 8/255 | 2400 | 2300-2500 | 0.0000 |\n"
                  "| torchattacks.PGD | 8/255 | 1900 | 1800-2000 | 0.0000 |\n"
                  "- eps 8/255: throughput ratio easycore/torchattacks = 1.263x (robust accuracy 0.0000 vs 0.0000, "
                  "difference 0.0000)\n")
    assert summarize_attack_speed(attack_log, 0) == ("resnet18 PGD-20: 8/255: easycore 2400 vs torchattacks 1900 img/s, "
                                                     "ratio 1.263x (robust acc 0.0000 vs 0.0000)")
    assert summarize_pytest("....\n4 passed, 1 skipped in 12.34s\n", 0) == "4 passed, 1 skipped"
    demo_partial = "DEMO-DATA cifar10 from /d\nDEMO-STAGES 59\nRunning stage 'check':\nRunning stage 'prepare':\n"
    assert summarize_demo(demo_partial, -9) == "2/59 stages started (cifar10 from /d)"
    demo_done = demo_partial + ('DEMO-RESULT {"stages": 59, "ran": 59, "seconds": 250.4, "device": "cuda", '
                                '"epochs": 2, "evaluated": 21, "clean": true}\n')
    assert summarize_demo(demo_done, 0) == ("59/59 stages ran in 250 s, 21 runs evaluated, dvc status clean; "
                                            "2 epochs on cuda (cifar10 from /d)")
    section = tmp_path / "epoch_time.md"
    section.write_text("# Benchmarks\n\nheader\n\n## Paper-scale epoch time (2026-01-01 00:00 UTC)\n\n| a |\n")
    outs = [Outcome("epoch_time", "w", "ok", 301.2, 390, "s/epoch ...", None, section),
            Outcome("demo", "w", "TIMEOUT", 270.0, 270, "stopped at the 270 s limit", None, None)]
    tab = summary_table(outs)
    assert tab.splitlines()[0] == "| part | status | s used / limit | key numbers |"
    assert tab.splitlines()[2] == "| epoch_time | ok | 301 / 390 | s/epoch ... |"
    assert tab.splitlines()[3] == "| demo | TIMEOUT | 270 / 270 | stopped at the 270 s limit |"
    body = report_body(outs, budget_s=900, wall_s=580, log_dir=tmp_path)
    assert "1/2 parts passed; 580 s wall for a budget of 900 s" in body
    assert "### Paper-scale epoch time (2026-01-01 00:00 UTC)" in body and "# Benchmarks" not in body


@pytest.mark.slow
def test_gpu_check_rehearsal_runs_the_gpu_commands_on_cpu(tmp_path):
    """The epoch_time and attack_speed parts with their GPU arguments (+ --quick --device cpu): both parse, run
    and land in the table, with their own sections below it."""
    from benchmarks import gpu_check

    out = tmp_path / "b.md"
    rc = gpu_check.main(["--rehearse", "--parts", "epoch_time,attack_speed", "--log-dir", str(tmp_path / "logs"),
                         "--out", str(out)])
    text = out.read_text()
    assert rc == 0, text
    assert "[--rehearse on CPU" in text and "2/2 parts passed" in text
    assert re.search(r"^\| epoch_time \| ok \| \d+ / \d+ \| s/epoch \(EXTRAPOLATED\): standard [\d.]+, trades [\d.]+ "
                     r"\[default\]; PGD-20 eval \d+ img/s \|$", text, re.M), text
    assert re.search(r"^\| attack_speed \| ok \| .*8/255: easycore \d+ vs torchattacks \d+ img/s", text, re.M), text
    assert "### Paper-scale epoch time" in text and "### Attack speed" in text


def test_dvc_queue_shards_deal_every_stage_once():
    from benchmarks.dvc_queue import shards

    stages = [f"evaluate@{i}" for i in range(10)]
    got = shards(stages, 4)
    assert got == [stages[0::4], stages[1::4], stages[2::4], stages[3::4]]
    assert sorted(sum(got, [])) == sorted(stages)
    assert shards(stages[:2], 4) == [[stages[0]], [stages[1]]]  # never an empty experiment


def test_study_cost_lays_out_stages_as_group_py_does():
    """benchmarks.study_cost's replay: a stage of n runs on w workers takes (n - n % w) / w paired runs and its
    tail (one run alone on every core, or one more paired round); one worker: the runs one after the other."""
    from benchmarks.study_cost import stage_wall

    assert stage_wall(10, 2, 100.0, 0.6) == 500.0                  # 5 rounds of 2
    assert stage_wall(3, 2, 100.0, 0.6) == 160.0                   # 1 round of 2, then one run alone (0.6 x)
    assert stage_wall(7, 4, 100.0, 0.6) == 200.0                   # 1 round of 4, then 3 at once
    assert stage_wall(1, 2, 100.0, 0.6) == 60.0                    # a group of one: alone on every core
    assert stage_wall(4, 1, 100.0, 0.6) == 400.0                   # no workers: one after the other


def test_study_cost_replays_a_finished_runs_timings(tmp_path):
    """The replay of a profile from a reference run's runs/timings: the reference replayed against itself with
    one worker is the sum of its runs' (median) seconds, scaled by the epochs; a group the reference did not run
    takes the median of the reference's static runs of its fraction and mode."""
    import json

    from benchmarks.study_cost import replay
    from easycore.config import params_from_dict
    from easycore.pipeline import runs

    base = {"data": {"dataset": "synthetic"}, "runtime": {"concurrent": 0},
            "proxy": {"epochs": 2, "transfer_models": []},
            "coreset": {"methods": ["easycore", "random"], "fractions": [0.1], "adaptive": [], "survey_methods": []},
            "train": {"epochs": 4, "modes": ["standard"], "seeds": [0, 1], "full_seeds": 0}}
    ref = params_from_dict(base)
    for r in runs.expected_runs(ref):
        d = tmp_path / "train" / r.scores
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{r.method}-{r.fraction}-{r.mode}-s{r.seed}.json").write_text(json.dumps({"seconds": 10.0 + r.seed}))
    (tmp_path / "proxy").mkdir()
    for s in (0, 1):
        (tmp_path / "proxy" / f"main-s{s}.json").write_text(json.dumps({"seconds": 30.0}))
    parts = dict(replay(ref, ref, tmp_path, alone=0.5, eval_s={"standard": 0.0}, fixed_s=0.0))
    n_runs = len(runs.expected_runs(ref))
    assert parts["proxies"] == 60.0
    assert sum(v for k, v in parts.items() if k.startswith("training")) == n_runs / 2 * 21.0   # seeds 10 s and 11 s
    base["train"]["epochs"] = 8
    base["coreset"]["survey_methods"] = ["el2n"]
    base["coreset"].update(survey_modes=["standard"], survey_fractions=[0.1])
    more = params_from_dict(base)
    parts = dict(replay(more, ref, tmp_path, alone=0.5, eval_s={"standard": 0.0}, fixed_s=0.0))
    assert parts["training: secondary"] == 2 * 2 * 10.5                  # el2n: the median of the static runs, x 2


def _cost_profile(**train):
    from easycore.config import params_from_dict

    return params_from_dict(_cost_dict(**train))


def _cost_dict(**train) -> dict:
    return ({
        "data": {"dataset": "synthetic", "n_per_class": 20, "test_n_per_class": 5}, "runtime": {"concurrent": 2},
        "proxy": {"epochs": 2, "transfer_models": [], "aign": {"mode": "exact"}},
        "coreset": {"methods": ["easycore", "random"], "fractions": [0.1], "adaptive": ["acs_craig"],
                    "adaptive_modes": ["trades"], "survey_methods": [], "acs": {"every": 2}},
        "train": {"epochs": 4, "modes": ["standard", "trades"], "seeds": [0, 1, 2], "full_seeds": 1, **train},
        "eval": {"n_test": 20, "attacks": ["pgd"], "strong": [], "eps_grid": [0.0], "sanity": False,
                 "pgd_steps": 2}})


def test_study_cost_run_seconds_from_rates():
    """The measured mode's seconds of a run: a static coreset its budget x epochs x its mode's rate, the full-data
    reference every image x full_epochs, ACS its schedule's images (acs_plan) plus one re-selection over every image
    per 'select'; / alone where two runs train at once, as they are with one worker."""
    import dataclasses

    from benchmarks.study_cost import Rates, rate_run_seconds
    from easycore.core.acs import acs_plan, partial_share
    from easycore.pipeline import runs

    P = _cost_profile(full_epochs=3)
    m = Rates(n_train=1000, n_measured=100, rate={"standard": 0.001, "trades": 0.004}, select_rate={"trades": 0.005},
              eval_s={}, proxy_s={}, proxy_post_s=0.0, deepfool_s=0.0)
    run_s = rate_run_seconds(P, m, alone=0.5)
    got = {(g.method, g.mode): run_s(g) for g in runs.expected_groups(P)}
    assert got[("easycore", "standard")] == pytest.approx(100 * 4 * 0.001 / 0.5)
    assert got[("random", "trades")] == pytest.approx(100 * 4 * 0.004 / 0.5)
    assert got[(runs.FULL, "trades")] == pytest.approx(1000 * 3 * 0.004 / 0.5)
    plan = acs_plan(4, 0.1, kappa=P.coreset.acs.kappa, R=2, warmup="exact")
    per = {"full": 1000, "partial": partial_share(4, 0.1, P.coreset.acs.kappa) * 1000, "skip": 0,
           "select": 100, "coreset": 100}
    assert plan.count("select") >= 1
    assert got[("acs_craig", "trades")] == pytest.approx(
        (0.004 * sum(per[k] for k in plan) + 0.005 * 1000 * plan.count("select")) / 0.5)
    one = dataclasses.replace(P, runtime=dataclasses.replace(P.runtime, concurrent=1))
    assert rate_run_seconds(one, m, alone=0.5)(next(iter(runs.expected_groups(one)))) == pytest.approx(0.4)


def test_study_cost_measured_and_replayed_agree(tmp_path):
    """One layout for both modes: timings written from the same per-run seconds that the measured mode computes,
    replayed against the same profile, predict the same parts, to the second."""
    import json

    from benchmarks.study_cost import Rates, predict, rate_run_seconds, replay
    from easycore.pipeline import runs

    P = _cost_profile()
    m = Rates(n_train=1000, n_measured=100, rate={"standard": 0.001, "trades": 0.004}, select_rate={"trades": 0.005},
              eval_s={"standard": 30.0, "trades": 50.0}, proxy_s={"main": 40.0}, proxy_post_s=2.0, deepfool_s=9.0)
    run_s = rate_run_seconds(P, m, alone=0.6)
    for g, members in runs.expected_groups(P).items():
        for r in members:
            f = tmp_path / "train" / g.scores / f"{g.method}-{g.fraction}-{g.mode}-s{r.seed}.json"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(json.dumps({"seconds": run_s(g)}))
    (tmp_path / "proxy").mkdir()
    for s in runs.proxy_seeds(P, "main"):
        (tmp_path / "proxy" / f"main-s{s}.json").write_text(json.dumps({"seconds": 99.0, "training_seconds": 40.0}))
    kw = dict(eval_s=m.eval_s, alone=0.6, fixed_s=60.0, proxy_post_s=2.0, deepfool_s=9.0)
    measured = predict(P, run_s=run_s, proxy_s=lambda name: m.proxy_s[name], **kw)
    replayed = replay(P, P, tmp_path, **kw)
    assert [k for k, _ in measured] == [k for k, _ in replayed]
    assert [v for _, v in measured] == pytest.approx([v for _, v in replayed])
    parts = dict(measured)
    n_df = sum(runs.needs_deepfool(P, "main", s) for s in runs.proxy_seeds(P, "main"))
    assert parts["proxies"] == pytest.approx(3 * (40.0 + 2.0) + 9.0 * n_df)
    # 4 primary groups of 3 runs on 2 workers: a paired round, then one run alone (0.6 x)
    assert parts["training: primary"] == pytest.approx(2 * 1.6 * 100 * 4 * (0.001 + 0.004) / 0.6)


def test_study_cost_measures_a_tiny_profile(tmp_path, monkeypatch):
    """The measured mode end to end on a tiny synthetic profile: every rate positive (the alone / paired ratio
    too: runtime.concurrent 2), a prediction for every part, and the table it prints."""
    import yaml

    import benchmarks.study_cost as sc

    seen, real = [], sc.measure
    monkeypatch.setattr(sc, "measure", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    f, out = tmp_path / "p.yaml", tmp_path / "bench.md"
    f.write_text(yaml.safe_dump(_cost_dict()))
    assert sc.main(["--params", str(f), "--n", "40", "--out", str(out)]) == 0
    (m,) = seen
    assert m.n_train == 200 and m.n_measured == 40
    assert set(m.rate) == {"standard", "trades"} and set(m.select_rate) == {"trades"}
    assert min(list(m.rate.values()) + list(m.eval_s.values()) + list(m.proxy_s.values())) > 0
    assert m.deepfool_s > 0 and m.proxy_post_s > 0 and m.alone > 0
    text = out.read_text()
    assert "(measured here)" in text
    for part in ("proxies", "training: primary", "training: ACS", "training: full data", "evaluation",
                 "predicted `dvc repro`"):
        assert part in text


def test_study_wall_counts_runs_at_once_once(tmp_path):
    """benchmarks.study_wall: a part's wall time is the union of its runs' intervals [ended - seconds, ended] (two runs
    at once count once, process time counts both); outside the runs is the span less every run's union; a timing
    without `ended` (before stages.write_timing wrote it) is read by its modification time; write_timing writes it."""
    import datetime as dt
    import json
    import os

    from benchmarks.study_wall import cost_table, intervals, union_length

    assert union_length([(0, 10), (5, 12), (20, 30), (21, 22)]) == 22 and union_length([]) == 0
    t0 = dt.datetime(2026, 12, 7, 1, 0, tzinfo=dt.timezone.utc).timestamp()

    def log(part, name, start_min, minutes, ended=True):
        f = tmp_path / part / f"{name}.json"
        f.parent.mkdir(parents=True, exist_ok=True)
        end = t0 + 60 * (start_min + minutes)
        rec = {"seconds": 60.0 * minutes}
        if ended:
            rec["ended"] = dt.datetime.fromtimestamp(end, dt.timezone.utc).isoformat()
        f.write_text(json.dumps(rec))
        if not ended:
            os.utime(f, (end, end))

    log("proxy", "main-s0", 0, 10)
    log("proxy", "main-s1", 10, 10, ended=False)
    log("train/main", "easycore-0.1-trades-s0", 22, 6)      # two at once: 22-28 and 22-30
    log("train/main", "random-0.1-trades-s0", 22, 8)
    log("eval", "main/easycore-0.1-trades-s0", 31, 1)
    spans = intervals(tmp_path)
    assert sorted(spans) == ["eval", "proxy", "train"] and len(spans["train"]) == 2
    table = cost_table(tmp_path)
    rows = {ln.split(" | ")[0].strip("| *"): ln.split(" | ") for ln in table.splitlines()[2:]}
    assert rows["proxies"][1:4] == ["2", "20.0", "20.0"]
    assert rows["training"][1:4] == ["2", "14.0", "8.0"]          # process 6 + 8, wall 8
    assert rows["evaluation"][3] == "1.0"
    assert rows["outside the runs (stage starts, DVC, selection, reports in between)"][3] == "3.0"   # 20-22, 30-31
    total = rows["first run's start to last run's end"]
    assert total[1:4] == ["5", "35.0", "**32.0**"] and total[4] == "2026-12-07 01:00 UTC"

    from easycore.pipeline import stages
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        rec = json.loads(stages.write_timing("train", "x", 12.345, examples=3).read_text())
    finally:
        os.chdir(cwd)
    assert rec["seconds"] == 12.35 and rec["examples"] == 3
    ended = dt.datetime.fromisoformat(rec["ended"]).timestamp()
    assert abs(ended - dt.datetime.now(dt.timezone.utc).timestamp()) < 60


def test_study_wall_splits_the_runs_process_time_by_piece(tmp_path):
    """benchmarks.study_wall.pieces_table: per part, each logged piece's process minutes summed over the runs and its
    share of the part's seconds; runs without pieces (older logs) leave it empty."""
    import json

    from benchmarks.study_wall import pieces_table

    def log(part, name, seconds, pieces=None):
        f = tmp_path / part / f"{name}.json"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps({"seconds": seconds, "ended": "2026-12-07T01:00:00+00:00",
                                 **({"pieces": pieces} if pieces else {})}))

    log("train/none", "acs_craig-0.1-trades-s0", 600, {"optimiser steps": 180, "coreset re-selection (adaptive)": 420})
    log("train/main", "random-0.1-trades-s0", 60)
    assert "| training | coreset re-selection (adaptive) | 1 | 7.0 | 70 % |" in pieces_table(tmp_path)  # of 600 s
    log("train/main", "random-0.1-trades-s1", 60, {"optimiser steps": 60})
    log("proxy", "main-s0", 300, {"optimiser steps": 150, "exact AIGN pass": 100, "features, test accuracy": 50})
    rows = [ln.split(" | ") for ln in pieces_table(tmp_path).splitlines()[2:]]
    got = {(r[0].strip("| "), r[1]): (r[2], r[3], r[4].strip(" |")) for r in rows}
    assert got[("proxies", "optimiser steps")] == ("1", "2.5", "50 %")
    assert got[("proxies", "exact AIGN pass")] == ("1", "1.7", "33 %")
    assert got[("training", "coreset re-selection (adaptive)")] == ("1", "7.0", "64 %")   # 420 of 660 s
    assert got[("training", "optimiser steps")] == ("2", "4.0", "36 %")
    assert [r[0].strip("| ") for r in rows] == ["proxies"] * 3 + ["training"] * 2          # proxies first


def test_study_wall_without_pieces_prints_no_second_table(tmp_path):
    import json

    from benchmarks.study_wall import pieces_table

    f = tmp_path / "train" / "main" / "x-s0.json"
    f.parent.mkdir(parents=True)
    f.write_text(json.dumps({"seconds": 5, "ended": "2026-12-07T01:00:00+00:00"}))
    assert pieces_table(tmp_path) == ""


def test_acs_cost_ops_profiles_a_reselection_beside_a_training_epoch():
    """benchmarks.acs_cost --ops: per-image ms and the top operators of one re-selection and one training epoch."""
    from benchmarks.acs_cost import op_profile

    threads = torch.get_num_threads()
    text = op_profile(str(REPO / "params-study-v2.yaml"), ".", True, True, n=200)
    assert torch.get_num_threads() == threads
    assert re.search(r"one TRADES training epoch \(batch 128\): [\d.]+ ms per image", text)
    assert re.search(r"one re-selection \(batch 256\): [\d.]+ ms per image", text)
    assert text.count("| aten::") >= 10
