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
