"""The documentation holds together: the README is a short front page that links every page under
docs/, and every relative link in them leads to a file that exists and, with a #fragment, to a
heading that exists (GitHub's anchors), so a moved section cannot leave a dead link behind."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness import REPO

README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [README, *DOCS]

_FENCED = re.compile(r"^```.*?^```$", re.MULTILINE | re.DOTALL)
_LINK = re.compile(r"\]\(([^()\s]+)\)")


def prose(path: Path) -> str:
    """The page without its fenced code blocks (a link or a '#' line there is not one)."""
    return _FENCED.sub("", path.read_text())


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text (code spans and link texts kept, markup dropped),
    lowercased, without punctuation other than '-' and '_', spaces as '-'."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for match in re.finditer(r"^#{1,6} (.+)$", prose(path), re.MULTILINE):
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(f"{base}-{count}" if count else base)  # GitHub numbers a repeated heading
    return found


def relative_links(path: Path) -> list[str]:
    text = re.sub(r"`[^`]*`", "", prose(path))  # code spans: `f(x)["a"](y)` is no link
    return [target for target in _LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", target)]


def test_slug_follows_githubs_rule() -> None:
    assert slug("Per `<Location>`") == "per-location"
    assert slug("Command line (Apache's habits)") == "command-line-apaches-habits"
    assert slug("mod_wasm's directives") == "mod_wasms-directives"
    assert slug("HTTP/1.1 framing") == "http11-framing"
    assert slug("1. Accept: `worker.py`") == "1-accept-workerpy"


def test_readme_is_a_short_front_page() -> None:
    assert len(README.read_text().splitlines()) < 200


def test_readme_links_every_docs_page() -> None:
    linked = {(REPO / target.partition("#")[0]).resolve() for target in relative_links(README)}
    unlinked = [page.name for page in DOCS if page.resolve() not in linked]
    assert DOCS and not unlinked, f"README.md links no docs page named {unlinked}: add it to the Documentation table"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        file, _, fragment = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists() or not dest.is_relative_to(REPO):
            broken.append(f"{target}: no such file")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target}: {dest.name} has no heading with that anchor")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)
