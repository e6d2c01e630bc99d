"""Every ```python block of README.md and of the docs pages (docs/*.md) runs, each in a fresh namespace, in a temporary folder.

The README keeps a ten-line example; the library quickstart and the bring-your-own-VAE example live in docs/library.md.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), flags=re.S | re.M)


BLOCKS = [(page.relative_to(ROOT).as_posix(), index, code) for page in PAGES for index, code in enumerate(python_blocks(page))]


def test_the_readme_and_the_library_page_have_python_examples():
    assert len(python_blocks(ROOT / "README.md")) >= 1
    library = python_blocks(ROOT / "docs" / "library.md")
    assert len(library) >= 2
    assert any("posthoc_vq.load_run" in code and "compress_weights" in code for code in library)  # the quickstart
    assert any("FunctionAutoencoder" in code for code in library)  # bring your own VAE


@pytest.mark.parametrize(("page", "index", "code"), BLOCKS, ids=[f"{page}-{index + 1}" for page, index, _ in BLOCKS])
def test_python_block_runs(page, index, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    compiled = compile(code, f"{page} python block {index + 1}", "exec")
    exec(compiled, {"__name__": f"doc_block_{index + 1}"})
