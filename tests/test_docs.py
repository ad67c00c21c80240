"""The README and docs/ hold together: every link leads somewhere, the README stays a page a
newcomer reads to the end, and nothing in the project speaks of issue numbers (a reader has no
tracker to look them up in).

What the README's commands do is proven by running them: tests/test_newcomer.py.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: Every page whose links are checked: the README, docs/ and the architecture page.
LINKED = [*PAGES, ROOT / "ARCHITECTURE.md"]
LINK_RE = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text, fence = [], False
    for line in page.read_text().splitlines():
        fence ^= line.startswith("```")
        if not fence and line.startswith("#"):
            text.append(slug(line.lstrip("#")))
    return set(text)


@pytest.mark.parametrize("page", LINKED, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_lead_somewhere(page: Path) -> None:
    broken = []
    for target in LINK_RE.findall(page.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no such heading)")
    assert broken == [], f"{page.name}: {broken}"


def test_every_docs_page_is_reachable_from_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    assert [p.name for p in PAGES[1:] if f"](docs/{p.name})" not in readme] == []
    assert "](ARCHITECTURE.md)" in readme


def test_readme_stays_a_newcomers_page() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme) < 16_000, "the README grows back into a manual: move the detail to a docs/ page"
    for section in ("## Quick start", "## Calling it", "## Trying things in the demo", "## What happens when…"):
        assert section in readme


def test_nothing_speaks_of_issue_numbers() -> None:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    found = []
    for name in files:
        path = ROOT / name
        if path.suffix not in {".py", ".md", ".toml", ".yaml", ".yml", ".js", ".html", ".css", ".txt", ""}:
            continue
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError):
            continue
        found += [f"{name}: {m.group(0)}" for m in re.finditer(r"\bissue\s*#?\d+", text, re.I)]
    assert found == []
