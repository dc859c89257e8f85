"""Notebooks under notebooks/ are stored clean: no outputs, no execution counts, a `parameters` cell."""
from pathlib import Path

import nbformat
import pytest

NB_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, f"no notebooks under {NB_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: code cells {dirty} have outputs or execution counts; clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_code_cell_is_parameters(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and "parameters" in code[0].metadata.get("tags", []), f"{path.name}: first code cell must be tagged 'parameters'"


def test_generator_matches_committed_notebooks(tmp_path):
    """tools/make_notebooks.py and notebooks/*.ipynb must not drift apart: regenerate and compare the cells."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_notebooks", NB_DIR.parent / "tools" / "make_notebooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.build(tmp_path)
    built = sorted(p.name for p in tmp_path.glob("*.ipynb"))
    assert built == [p.name for p in NOTEBOOKS]
    for name in built:
        new = nbformat.read(tmp_path / name, as_version=4)
        old = nbformat.read(NB_DIR / name, as_version=4)
        assert [(c.cell_type, c.source) for c in new.cells] == [(c.cell_type, c.source) for c in old.cells], (
            f"{name} differs from what tools/make_notebooks.py builds; edit one and regenerate/copy the other")
