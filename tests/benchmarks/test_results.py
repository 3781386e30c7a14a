"""benchmarks/RESULTS.md (index) and benchmarks/results/*.md (one page per method) stay consistent.

The index's headline figures must be the pages' own figures, every page must be indexed, every link and image
must resolve, and every section must show the command that produced its figures.
"""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INDEX = REPO / "benchmarks" / "RESULTS.md"
PAGES_DIR = REPO / "benchmarks" / "results"
PAGES = sorted(PAGES_DIR.glob("*.md"))

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)
DECIMAL = re.compile(r"\d+\.\d+")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def index_rows() -> list[dict]:
    """The rows of the index's headline table: result, headline, seeds, page (the linked file)."""
    rows = []
    for line in INDEX.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if len(cells) != 4 or cells[0] in ("result", "---"):
            continue
        links = LINK.findall(cells[3])
        assert len(links) == 1, f"{INDEX.name}: row {cells[0]!r} must link exactly one page, got {links}"
        rows.append({"result": cells[0], "headline": cells[1], "seeds": cells[2], "page": INDEX.parent / links[0]})
    return rows


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return {slug(m) for m in re.findall(r"^#+ (.+)$", text, re.M)}


def test_index_has_a_row_for_every_page_and_only_existing_pages():
    rows = index_rows()
    assert len(rows) >= len(PAGES) >= 9, (len(rows), [p.name for p in PAGES])
    linked = {row["page"].resolve() for row in rows}
    missing = [row["page"] for row in rows if not row["page"].is_file()]
    assert not missing, f"index rows link pages that do not exist: {missing}"
    orphans = [p.name for p in PAGES if p.resolve() not in linked]
    assert not orphans, f"pages not in the index table: {orphans}"
    assert all(row["headline"] and row["seeds"] for row in rows), rows


@pytest.mark.parametrize("row", index_rows(), ids=lambda row: row["result"][:40])
def test_headline_figures_are_the_pages_figures(row):
    page = row["page"].read_text(encoding="utf-8")
    figures = DECIMAL.findall(row["headline"])
    assert figures, f"row {row['result']!r} has no figure"
    absent = [f for f in figures if not re.search(rf"(?<![\d.]){re.escape(f)}(?!\d)", page)]
    assert not absent, f"{row['page'].name} does not contain the index's figures {absent} ({row['result']!r})"


@pytest.mark.parametrize("path", [INDEX, *PAGES, REPO / "README.md"], ids=lambda p: p.name)
def test_links_and_images_resolve(path):
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # http(s):, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file) if file else path
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(target)
    assert not broken, f"{path.relative_to(REPO)}: broken links {broken}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_paths_named_on_a_page_exist(page):
    """Inline code that is a single repository path (``benchmarks/...``, ``configs/...``) names a real file."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    paths = [s for s in CODE_SPAN.findall(text)
             if re.fullmatch(r"(benchmarks|configs|tests|lit_rlhf|examples)/[\w./-]*", s)]
    assert paths, f"{page.name} names no repository path"
    missing = [p for p in paths if not (REPO / p).exists()]
    assert not missing, f"{page.name}: {missing} do not exist"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_section_shows_its_command(page):
    text = page.read_text(encoding="utf-8")
    assert text.startswith("# Measured results: "), page.name
    sections = re.split(r"^## ", text, flags=re.M)[1:]
    assert sections, f"{page.name} has no ## section"
    for section in sections:
        title = section.splitlines()[0]
        assert re.search(r"\b(python|lit-rlhf) ", section), f"{page.name}, {title!r}: no command shown"
