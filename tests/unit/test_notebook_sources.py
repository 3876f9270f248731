"""The committed notebooks are exactly what ``scripts/build_notebooks.py`` writes.

The script is the source of truth for notebooks 02–05; an edit made in JupyterLab and not
carried back to the script would be lost at the next rebuild, so it fails here instead.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_builder():
    spec = importlib.util.spec_from_file_location(
        "build_notebooks", ROOT / "scripts" / "build_notebooks.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BUILDER = load_builder()


def cell_sources(notebook) -> list[tuple[str, str, str]]:
    return [(cell.cell_type, cell.id, cell.source) for cell in notebook.cells]


@pytest.mark.parametrize("name", sorted(BUILDER.NOTEBOOK_CELLS))
def test_committed_notebook_matches_the_build_script(name):
    committed = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    built = BUILDER.notebook(BUILDER.NOTEBOOK_CELLS[name])
    assert cell_sources(committed) == cell_sources(built), (
        f"notebooks/{name} differs from scripts/build_notebooks.py: edit the script and run it"
    )
    assert all(not c.get("outputs") for c in committed.cells if c.cell_type == "code"), (
        f"notebooks/{name} is committed with outputs; rebuild it to clear them"
    )
