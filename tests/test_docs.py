"""Every Python code block in README.md and docs/*.md runs as written.

A block directly preceded by the line ``<!-- not-run -->`` is illustrative only
(e.g. a fragment that needs your own services) and is skipped by this test.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_BLOCK = re.compile(r"(?P<marker><!-- not-run -->\s*\n)?```python\n(?P<code>.*?)```", re.S)


def _blocks() -> list[tuple[str, str]]:
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text()
        for i, match in enumerate(_BLOCK.finditer(text)):
            if match.group("marker"):
                continue
            found.append((f"{path.relative_to(ROOT)}#{i}", match.group("code")))
    return found


BLOCKS = _blocks()


def test_the_readme_has_a_runnable_example() -> None:
    assert any(name.startswith("README.md") for name, _ in BLOCKS)


@pytest.mark.parametrize(("name", "code"), BLOCKS, ids=[n for n, _ in BLOCKS])
def test_code_block_runs(name: str, code: str, tmp_path: Path) -> None:
    script = tmp_path / "block.py"
    script.write_text(code)
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=tmp_path,
    )
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
