"""Every ```python block of the README and docs/ runs, file by file, as one script."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks(path: Path) -> str:
    return "\n\n".join(BLOCK.findall(path.read_text()))


@pytest.mark.parametrize("path", [p for p in DOCS if _blocks(p)], ids=lambda p: p.name)
def test_examples_run(path: Path, tmp_path: Path) -> None:
    script = tmp_path / f"{path.stem}_example.py"
    script.write_text(_blocks(path))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONFMAN_")}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
