"""What the docs' fleet example leaves in Redis: nothing that never expires."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import redis

from ..test_docs import ROOT, _blocks

# The example names its cluster ``docs-<8 hex digits of uuid4()>``: fix that uuid, so
# that only this run's keys are looked at (other runs may share the Redis).
PRELUDE = """\
import uuid as _uuid
_fixed = _uuid.UUID({hex!r})
_uuid.uuid4 = lambda: _fixed
"""


def test_docs_cluster_example_leaves_no_key_without_expiry(redis_url: str, tmp_path: Path) -> None:
    fixed = uuid.uuid4()
    prefix = f"docs-{fixed.hex[:8]}"
    script = tmp_path / "cluster_example.py"
    script.write_text(PRELUDE.format(hex=fixed.hex) + _blocks(ROOT / "docs" / "cluster.md"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONFMAN_")}
    env["PYTHONPATH"] = str(ROOT)
    client = redis.Redis.from_url(redis_url)
    try:
        result = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
            text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        assert keys, "the example's cluster left no key at all: is the prefix still right?"
        forever = sorted(k.decode() for k in keys if client.pttl(k) == -1)
        assert forever == []
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            client.delete(*keys)
        client.close()
