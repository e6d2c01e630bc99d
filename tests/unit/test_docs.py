"""The README stays short and every relative link in it and in the docs pages leads somewhere.

Links are checked as GitHub shows them (README.md relative to the repository root, docs/*.md relative to docs/) and,
for a link to a heading, against both slug rules: GitHub's and Python-Markdown's (the site's), so that an anchor works
in both. `make docs` (mkdocs build --strict) checks the site again; this test needs no docs tools.
"""

import re
from pathlib import Path
from urllib.parse import unquote

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.S | re.M)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)


def prose(text: str) -> str:
    """The text without fenced code blocks and code spans, where a bracket is no link."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def links(page: Path) -> list[str]:
    text = prose(page.read_text())
    return INLINE_LINK.findall(text) + REFERENCE_DEF.findall(text)


def heading_texts(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text())
    out = []
    for _, title in HEADING.findall(text):
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)  # a link in a heading counts by its text
        out.append(title.replace("`", "").replace("*", ""))
    return out


def github_slug(title: str) -> str:
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def markdown_slug(title: str) -> str:  # Python-Markdown's toc.slugify, which MkDocs uses
    value = re.sub(r"[^\w\s-]", "", title).strip().lower()
    return re.sub(r"[-\s]+", "-", value)


def anchors(page: Path) -> tuple[set[str], set[str]]:
    titles = heading_texts(page)
    return {github_slug(t) for t in titles}, {markdown_slug(t) for t in titles}


def broken_links(page: Path) -> list[str]:
    base = ROOT if page == README else page.parent
    broken = []
    for url in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", url, re.I):  # https:, mailto:, ...
            continue
        path, _, fragment = url.partition("#")
        target = (base / unquote(path)).resolve() if path else page
        if path.startswith("/"):
            broken.append(f"{url}: absolute path")
        elif not target.is_file():
            broken.append(f"{url}: no file {target}")
        elif fragment and target.suffix == ".md":
            github, site = anchors(target)
            if fragment not in github or fragment not in site:
                broken.append(f"{url}: no heading '{fragment}' in {target.name} (GitHub: {fragment in github}, site: {fragment in site})")
    return broken


def test_the_readme_is_short():
    lines = README.read_text().splitlines()
    assert len(lines) <= 220, f"README.md has {len(lines)} lines; move detail into docs/"
    text = prose(README.read_text())
    defined = {m.lower() for m in re.findall(r"^ {0,3}\[([^\]]+)\]:", text, re.M)}
    used = {m.lower() for m in re.findall(r"\]\[([^\]]+)\]", text)}
    assert used <= defined, f"README.md uses link references it never defines: {sorted(used - defined)}"
    long = [i + 1 for i, line in enumerate(lines) if len(line) > 150]
    assert not long, f"README.md lines longer than 150 characters: {long}"


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_every_relative_link_resolves(page):
    assert links(page) or page.name == "api.md", f"{page.name} has no links at all: is the link pattern broken?"
    assert broken_links(page) == []


def test_the_link_check_finds_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("# There\n\n## A section, with punctuation (1 / 2)\n")
    page.write_text(
        "[ok](there.md) [ok](there.md#there) ![ok](there.md) [ok](#here) `[skip](nowhere.md)`\n\n# Here\n\n"
        "[gone](missing.md) [bad anchor](there.md#nowhere) [differs](there.md#a-section-with-punctuation-1--2)\n\n"
        "[ref]: missing-too.png\n"
    )
    found = broken_links(page)
    assert len(found) == 4, found
    assert any("missing.md" in f for f in found) and any("missing-too.png" in f for f in found)
    assert any("nowhere" in f for f in found) and any("GitHub: True, site: False" in f for f in found)


def test_every_docs_page_is_in_the_site_nav():
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.SafeLoader)

    def files(nav):
        for item in nav:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            yield from files(value) if isinstance(value, list) else [value]

    nav = set(files(config["nav"]))
    pages = {p.name for p in DOCS.glob("*.md")}
    assert nav == pages, f"in the nav but missing: {sorted(nav - pages)}; pages not in the nav: {sorted(pages - nav)}"
    assert config.get("strict") is True and config["validation"]["links"]["not_found"] == "warn"


def test_the_readme_commands_are_make_targets():
    makefile = (ROOT / "Makefile").read_text()
    for target in re.findall(r"^make (\w[\w-]*)", README.read_text(), re.M):
        assert re.search(rf"^{target}:", makefile, re.M), f"README runs `make {target}`, which the Makefile lacks"
    assert re.search(r"^test:.*\bdocs\b", makefile, re.M), "`make test` no longer builds the docs"
