"""The README against the committed reports: every table it copies from reports/ matches the file row by row,
every 'difference [CI]' it quotes exists in a report table, its local links resolve, its API example runs; LICENSE
and CITATION.cff agree with pyproject. Generic: parses whatever reports/ holds, so a new study only needs the README
rows updated (the test says which; `easycore tables` re-copies them)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
from easycore.report.docs_tables import MARK  # noqa: E402  (one definition: `easycore tables` re-copies them)
DIFF_CI = re.compile(r"[+-]\d+\.\d \[[+-]\d+\.\d, [+-]\d+\.\d\]")


def _cells(row: str) -> tuple[str, ...]:
    return tuple(c.strip() for c in row.strip().strip("|").split("|"))


def _table_rows(text: str) -> set[tuple[str, ...]]:
    return {_cells(ln) for ln in text.splitlines() if ln.startswith("|") and not set(ln) <= set("|:- ")}


def test_readme_opens_with_the_verdict_figure_and_table_then_the_two_commands():
    head = README[:README.index("## Two commands")]
    assert head.count("\n") < 40, "the README should reach the two commands within ~40 lines"
    assert re.search(r"!\[[^\]]*\]\(reports/[^)]*verdict\.png\)", head), "no verdict figure before the commands"
    assert MARK.search(head), "no table from reports/ before the commands"
    two = README[README.index("## Two commands"):]
    assert two.index("make demo") < two.index("make test") < 400


DOCS = {"README.md": README, **{f"docs/{p.name}": p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))}}
COPIED = [(doc, src, block) for doc, text in DOCS.items() for src, block in MARK.findall(text)]


@pytest.mark.parametrize("doc, src, block", COPIED, ids=[f"{d}:{s}" for d, s, _ in COPIED])
def test_readme_tables_match_reports(doc, src, block):
    """Every table the README or a page of docs/ copies from reports/ matches its file row by row."""
    path = ROOT / src
    assert path.exists(), f"{doc} copies rows of {src}, which does not exist"
    have = _table_rows(path.read_text())
    rows = [ln for ln in block.splitlines() if ln.startswith("|") and not set(ln) <= set("|:- ")]
    assert rows, f"{doc}: the marker for {src} has no rows under it (run `easycore tables`)"
    header, body = rows[0], rows[1:]
    assert _cells(header) in have, f"{doc}'s header differs from {src}: {header}"
    stale = [r for r in body if _cells(r) not in have]
    assert not stale, f"{doc}: rows not in {src} (re-copy them):\n" + "\n".join(stale)


def test_readme_quoted_differences_exist_in_reports():
    """Every 'difference [CI]' the README or docs/results.md quotes is in a report table."""
    quoted = set(DIFF_CI.findall(README + DOCS["docs/results.md"]))
    assert quoted, "the README quotes no difference [CI]"
    reports = "\n".join(p.read_text() for p in (ROOT / "reports").rglob("*.md"))
    missing = sorted(q for q in quoted if q not in reports)
    assert not missing, f"README quotes differences no report table holds: {missing}"


def test_readme_package_count_matches_the_lock():
    m = re.search(r"all (\d+) packages pinned", README)
    lock = (ROOT / "requirements.lock").read_text()
    n = len(re.findall(r"^[A-Za-z0-9_.\-\[\]]+==", lock, flags=re.M))
    assert m and int(m.group(1)) == n, (m and m.group(1), n)


def test_readme_and_docs_local_links_resolve():
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if re.match(r"[a-z]+://", target):
                continue
            assert (doc.parent / target).exists(), f"{doc.name}: broken link {target}"


def test_api_example_runs():
    """docs/api.md's first example (the README links it) runs verbatim."""
    api = (ROOT / "docs" / "api.md").read_text()
    section = api[api.index("# Your own data"):]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    ns: dict = {}
    exec(compile(code, "docs/api.md", "exec"), ns)
    keep, y = ns["keep"], ns["y"]
    assert len(keep) == 60 and len(set(keep.tolist())) == 60
    assert sorted(set(y[keep].tolist())) == list(range(10))         # balanced: every class kept
    assert len(ns["coreset"]) == 60


def test_methods_table_in_docs_is_the_registry():
    from easycore.core.coresets import direction_table_markdown

    assert direction_table_markdown() in (ROOT / "docs/pipeline.md").read_text()


def test_license_and_citation():
    lic = (ROOT / "LICENSE").read_text()
    assert lic.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in lic
    assert 'license = {text = "MIT"}' in (ROOT / "pyproject.toml").read_text()
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "MIT" and cff["authors"]
    paper = cff["preferred-citation"]
    assert "2510.11018" in str(paper) and paper["doi"] == "10.48550/arXiv.2510.11018"
    assert [f"{a['given-names']} {a['family-names']}" for a in paper["authors"]] == [
        "Pranav Ramesh", "Arjun Roy", "Deepak Ravikumar", "Kaushik Roy", "Gopalakrishnan Srinivasan"]
    assert cff["type"] == "software" and cff["title"].startswith("easycore")      # this software's own entry
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), flags=re.M).group(1)
    assert str(cff["version"]) == version


def test_statistics_worked_example_recomputes():
    """docs/statistics.md's worked example: every number it prints comes out of easycore.inference on its matrix."""
    import numpy as np

    from easycore import inference

    text = (ROOT / "docs/statistics.md").read_text()
    d = np.array([[1, 0, 0, 1, 0, 1, 0, 0], [0, 0, -1, 1, 0, 1, 1, 0], [1, 1, 0, 1, 0, 1, 0, -1]])
    rows = "\n".join(f"replicate {k}:  " + "  ".join(f"{v:d}" if v < 0 else f" {v:d}" for v in r).lstrip()
                     for k, r in enumerate(d))
    for k, r in enumerate(d):
        assert f"replicate {k}:" in text and f"mean {r.mean():.3f}" in text, rows
    c, f = inference.crossed(d), inference.fixed_set(d)
    assert f"**{100 * c.diff:+.1f} points**" in text
    assert f"**[{100 * f.lo:+.1f}, {100 * f.hi:+.1f}]** points, p = {f.p:.3f}" in text
    assert f"**[{100 * c.lo:+.1f}, {100 * c.hi:+.1f}]**" in text and f"(p = {c.p:.2f}, about {c.df:.0f} degrees" in text


def test_easycore_tables_recopies_every_marked_block_and_writes_nothing_on_a_missing_source(tmp_path, monkeypatch,
                                                                                          capsys):
    """`easycore tables` (report/docs_tables.py): a stale block and a marker with no rows yet get their file's table;
    a second run changes no byte; a marker naming a missing file is one clear error and no document is written."""
    from easycore.cli import main
    from easycore.report.docs_tables import copy_tables

    monkeypatch.chdir(tmp_path)
    src = Path("reports/t.md")
    src.parent.mkdir()
    src.write_text("Caption.\n\n| a | b |\n|:--|--:|\n| x | 1.5 |\n| y | 2.5 |\n")
    mark = "<!-- rows of reports/t.md (tests/test_docs.py checks them) -->\n"
    stale = Path("README.md")
    stale.write_text(f"# R\n\n{mark}| a | b |\n|:--|--:|\n| x | 9.9 |\n\nAfter.\n")
    empty = Path("docs/results.md")
    empty.parent.mkdir()
    empty.write_text(f"Before.\n\n{mark}\nAfter.\n")
    assert main(["tables"]) == 0
    table = "| a | b |\n|:--|--:|\n| x | 1.5 |\n| y | 2.5 |\n"
    assert stale.read_text() == f"# R\n\n{mark}{table}\nAfter.\n"
    assert empty.read_text() == f"Before.\n\n{mark}{table}\nAfter.\n"
    assert "re-copied reports/t.md" in capsys.readouterr().out
    assert MARK.findall(stale.read_text()) == [("reports/t.md", table)]
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (stale, empty)}
    assert copy_tables([stale, empty]) == []
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (stale, empty)} == before   # not rewritten

    src.write_text(src.read_text().replace("2.5", "3.5"))
    missing = Path("docs/other.md")
    missing.write_text("<!-- rows of reports/gone.md (tests/test_docs.py checks them) -->\n| a |\n")
    assert main(["tables"]) != 0
    assert "reports/gone.md, which does not exist" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in (stale, empty)} == {p: b for p, (b, _) in before.items()}
    assert not list(Path(".").rglob(".*.tmp*"))
