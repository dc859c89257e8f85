"""The command line as a user meets it: argparse mistakes as one line with a "did you mean", `--help` without
importing torch, `easycore methods` as a terminal table (Markdown behind --markdown)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from _reliability import REPO, sub_env
from easycore import cli
from easycore.core.coresets import METHODS, direction_table_markdown


def _run(argv, capsys):
    rc = cli.main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, [ln for ln in cap.err.splitlines() if ln.strip()]


@pytest.mark.parametrize("argv, prefix, needles", [
    (["trian"], "easycore: error: ", ("invalid choice: 'trian'", "did you mean 'train'?")),
    (["train", "--mode", "tardes", "--full", "--out", "x"], "easycore train: error: ",
     ("argument --mode: invalid choice: 'tardes'", "did you mean 'trades'?")),
    (["select", "--method", "easycor", "--fraction", "0.5"], "easycore select: error: ",
     ("argument --method: invalid choice: 'easycor'", "did you mean 'easycore'?")),
    (["select", "--method", "acs_craig", "--fraction", "0.5"], "easycore select: error: ",   # adaptive: not static
     ("argument --method: invalid choice: 'acs_craig'",)),
    (["train", "--methd", "easycore", "--mode", "standard"], "easycore train: error: ",
     ("unrecognized arguments: --methd easycore", "did you mean '--method'?")),
    (["select", "--fraction", "0.5"], "easycore select: error: ", ("go with --method",)),   # no method: all
    (["eval", "--seed", "x"], "easycore eval: error: ", ("argument --seed",)),
])
def test_argparse_mistakes_are_one_line_with_did_you_mean(argv, prefix, needles, capsys):
    rc, out, err = _run(argv, capsys)
    assert rc == 2 and out == "" and len(err) == 1, err
    assert err[0].startswith(prefix), err
    assert not any(ln.startswith("usage:") for ln in err)
    for n in needles:
        assert n in err[0], err


def test_no_suggestion_for_a_far_miss(capsys):
    rc, _, err = _run(["select", "--method", "zzzzzz", "--fraction", "0.5"], capsys)
    assert rc == 2 and "did you mean" not in err[0] and "choose from easycore" in err[0]


def test_help_does_not_import_torch():
    code = ("import sys, contextlib, io\nimport easycore.cli as c\n"
            "for cmd in ([], ['train'], ['select'], ['eval'], ['methods']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()):\n"
            "        try: c.main(cmd + ['--help'])\n"
            "        except SystemExit as e: assert e.code == 0\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=sub_env(), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", r.stdout


def test_methods_is_a_terminal_table_and_markdown_behind_a_flag(capsys):
    rc, out, err = _run(["methods"], capsys)
    assert rc == 0 and not err
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["method", "kind"] and set(lines[1]) <= {"-", " "}
    assert max(map(len, lines)) <= 100, max(map(len, lines))
    assert "|" not in "".join(ln[:14] for ln in lines) and "\\|" not in out      # no Markdown, no escapes
    names = [ln.split()[0] for ln in lines[2:] if ln and not ln.startswith(" ")]
    assert names == list(METHODS)
    rc, out, _ = _run(["methods", "--markdown"], capsys)
    assert rc == 0 and out == direction_table_markdown()


def test_methods_table_wraps_to_the_width_asked():
    text = cli.methods_table(width=80)
    assert max(map(len, text.splitlines())) <= 80
    assert "(Dolatabadi et al. 2022)" in " ".join(text.split())      # wrapped, not cut
