"""The repository documents itself: nothing a user reads points outside it or at the process."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUTSIDE = re.compile(r"DESIGN\.md|\.\./shared|\bissue #?\d+|closing[- ]note", re.IGNORECASE)


def _read_by_users() -> list[Path]:
    files = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "notebooks").glob("*")]
    files += [p for p in (ROOT / "workbench").rglob("*") if p.suffix in (".py", ".md")]
    return [p for p in files if p.is_file()]


def test_nothing_refers_outside_the_repository():
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _read_by_users()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if OUTSIDE.search(line)
    ]
    assert found == []


def test_every_doc_page_the_index_lists_exists_and_the_readme_links_the_docs():
    index = (ROOT / "docs" / "README.md").read_text(encoding="utf-8")
    for page in re.findall(r"\]\(([a-z_]+\.md)\)", index):
        assert (ROOT / "docs" / page).is_file(), page
    assert "docs/" in (ROOT / "README.md").read_text(encoding="utf-8")


STAGES = ("models", "data", "hooks", "directions", "steering", "measure", "manifold")
STAGES += ("training", "report", "pipelines")


def test_the_data_flows_one_way_through_the_subpackages():
    # a module imports (at module level) only from its own stage, earlier ones and the shared
    # modules, so there is no import cycle and the folder listing is the reading order
    import ast

    rank = {stage: i for i, stage in enumerate(STAGES)}
    backwards = []
    for path in (ROOT / "workbench").rglob("*.py"):
        parts = path.relative_to(ROOT / "workbench").parts
        if parts[0] not in rank:
            continue
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("workbench."):
                stage = node.module.split(".")[1]
                if stage in rank and rank[stage] > rank[parts[0]]:
                    backwards.append(f"{'/'.join(parts)} imports {node.module}")
    assert backwards == []
