"""The README's Python examples run as written."""

import re
from pathlib import Path

import pytest

import nas

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index):
    added = set()
    try:
        before = set(nas.OPS)
        exec(compile(BLOCKS[index], f"README.md block {index}", "exec"), {})
        added = set(nas.OPS) - before
    finally:
        for name in added:
            del nas.OPS[name]
