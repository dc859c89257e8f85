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
