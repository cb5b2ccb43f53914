"""docs/gateway.md's python blocks run as a script, as a reader would run them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "gateway.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


def test_gateway_doc_runs(tmp_path: Path) -> None:
    blocks = python_blocks(DOC.read_text())
    assert blocks, "docs/gateway.md has no python block"
    script = tmp_path / "gateway.py"
    script.write_text("\n\n".join(blocks))
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "request 2:" in result.stdout
