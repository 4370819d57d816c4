"""Self-contained code examples in the user docs run as written."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_recipes_example_runs():
    text = (DOCS / "recipes.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "docs/recipes.md lost its example"
    scope: dict = {}
    exec(compile(blocks[0], "docs/recipes.md", "exec"), scope)
    assert scope["main"].shape == (1, 4, 256, 256)
    assert float(scope["loss"].detach()) > 0 and set(scope["parts"]) >= {"pce", "dice", "alpha"}


def test_docs_link_targets_exist():
    for md in [*DOCS.glob("*.md"), DOCS.parent / "README.md"]:
        for target in re.findall(r"\]\(([^)#]+\.md)\)", md.read_text()):
            assert (md.parent / target).exists(), f"{md.name} links to missing {target}"
