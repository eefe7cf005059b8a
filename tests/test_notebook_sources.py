"""Every notebook in notebooks/ has one source: its cells in tools/build_notebooks.py. The committed notebook
(executed, its outputs the nbval reference) must hold exactly the cells that file builds."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import build_notebooks  # noqa: E402


def _cells(nb) -> list[tuple[str, str, list[str]]]:
    return [(c.cell_type, c.source, list(c.metadata.get("tags", []))) for c in nb.cells]


def test_every_notebook_has_a_source():
    assert sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb")) == sorted(build_notebooks.NOTEBOOK_SOURCES)


@pytest.mark.parametrize("name", sorted(build_notebooks.NOTEBOOK_SOURCES))
def test_committed_notebook_is_the_one_its_source_builds(name):
    committed = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    built = build_notebooks.build(name, build_notebooks.NOTEBOOK_SOURCES[name])
    assert _cells(committed) == _cells(built), (
        f"notebooks/{name}.ipynb differs from its source in tools/build_notebooks.py: rebuild it with "
        f"`.venv/bin/python tools/build_notebooks.py --execute {name}` and commit the executed notebook")


def test_the_comparison_sees_an_edited_cell():
    """Not vacuous: one changed character in one cell is a difference."""
    name = "taylor_bias"
    built = build_notebooks.build(name, build_notebooks.NOTEBOOK_SOURCES[name])
    edited = nbformat.reads(nbformat.writes(built), as_version=4)
    edited.cells[-1].source += " "
    assert _cells(edited) != _cells(built)
