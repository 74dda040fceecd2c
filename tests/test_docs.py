"""The documentation holds together: every relative link resolves, and the README stays a front
door."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
RESULTS_BEGIN = "<!-- results:begin -->"
RESULTS_END = "<!-- results:end -->"

# [text](target) or ![alt](target), with an optional "title"; the target has no spaces.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(`{3,}|~{3,}).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+).+?\1", re.DOTALL)
EXTERNAL = ("http://", "https://", "mailto:")


def relative_links(text: str) -> list[str]:
    """Link targets that should name a file or folder of the repository (code is not prose)."""
    prose = CODE_SPAN.sub("", FENCE.sub("", text))
    targets = [m.group(1) for m in LINK.finditer(prose)]
    return [t for t in targets if not t.startswith(EXTERNAL) and not t.startswith("#")]


def test_link_pattern_reads_the_forms_the_docs_use() -> None:
    text = (
        "[a](docs/x.md) ![img](../reports/ui/a.png) [b](x.md#anchor) [c](#local) "
        "[d](https://example.org) [e](mailto:a@b.c) `[f](in/code.md)`\n"
        "```\n[g](in/fence.md)\n```\n"
    )
    assert relative_links(text) == ["docs/x.md", "../reports/ui/a.png", "x.md#anchor"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    broken = [
        target
        for target in relative_links(page.read_text(encoding="utf-8"))
        if not (page.parent / target.split("#", 1)[0]).exists()
    ]
    assert not broken, f"{page.relative_to(ROOT)}: links to nothing: {broken}"


def test_readme_is_a_front_door() -> None:
    text = README.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) < 200, (
        f"README.md has {len(lines)} lines; the limit is 199 (move detail to docs/)"
    )
    assert text.count(RESULTS_BEGIN) == 1, f"README.md must hold {RESULTS_BEGIN!r} exactly once"
    assert text.count(RESULTS_END) == 1, f"README.md must hold {RESULTS_END!r} exactly once"
    assert text.index(RESULTS_BEGIN) < text.index(RESULTS_END), "results markers out of order"
