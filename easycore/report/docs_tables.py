"""The tables the README and docs/ copy from reports/, re-copied from their files (`easycore tables`).

A copied table is a block of Markdown table rows right under a marker line naming its file:

    <!-- rows of reports/study/tables/coresets/verdict_primary.md (tests/test_docs.py checks them) -->
    | mode | ... |

tests/test_docs.py checks every such block row by row against its file; `copy_tables` rewrites each block with its
file's table (a marker with no rows under it yet gets them), so a re-run study's numbers reach the prose pages in one
command, and the words around them are the author's to rewrite.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from easycore.store import ArtifactError, atomic_path

MARK = re.compile(r"<!-- rows of (\S+) \(tests/test_docs.py checks them\) -->\n((?:\|.*\n?)*)")
"""A marker line and the table rows under it (group 1: the copied file, relative to the repository; group 2: the
rows)."""


def table_rows(text: str) -> list[str]:
    """The Markdown table lines of a report table file (every line that starts with '|')."""
    return [ln.rstrip() for ln in text.splitlines() if ln.startswith("|")]


def copy_tables(docs: Sequence[Path], root: Path = Path(".")) -> list[tuple[str, str]]:
    """Re-copy every marked table of the Markdown files `docs` from its file under `root`. Every source is read
    before anything is written: a marker naming a missing file or one without a table is one ArtifactError and no
    document changes. A document whose tables are already current is not rewritten (its bytes stay). Returns
    [(document, source)] of the blocks that changed."""
    root = Path(root)
    rewritten, changed = {}, []
    for doc in docs:
        text = Path(doc).read_text()

        def repl(m: re.Match, doc=doc) -> str:
            src = m.group(1)
            path = root / src
            if not path.is_file():
                raise ArtifactError(f"{doc} copies the rows of {src}, which does not exist (run the report, or "
                                    f"remove the marker)")
            rows = table_rows(path.read_text())
            if not rows:
                raise ArtifactError(f"{doc} copies the rows of {src}, which holds no Markdown table")
            block = "\n".join(rows) + "\n"
            if block != m.group(2):
                changed.append((str(doc), src))
            return m.group(0)[: m.start(2) - m.start(0)] + block

        new = MARK.sub(repl, text)
        if new != text:
            rewritten[Path(doc)] = new
    for doc, text in rewritten.items():
        with atomic_path(doc, suffix=".md") as tmp:
            Path(tmp).write_text(text)
    return changed


def run(docs: Sequence[str] = ()) -> int:
    """`easycore tables [DOC ...]`: README.md and docs/*.md by default; prints what changed."""
    paths = [Path(d) for d in docs] or [p for p in [Path("README.md"), *sorted(Path("docs").glob("*.md"))]
                                        if p.is_file()]
    changed = copy_tables(paths)
    for doc, src in changed:
        print(f"tables: {doc}: re-copied {src}")
    print(f"tables: {len(changed)} of the copied tables changed" if changed else
          f"tables: every table copied in {len(paths)} document(s) is current")
    return 0
