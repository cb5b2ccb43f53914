"""The env-file source (`.env`, `local.env`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from confman import ConfigSourceError, Layer
from confman.sources import DotEnvSource
from confman.testing import temporary_hub
from tests.models import FlagsManager


def test_reads_confman_variables_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text(
        "# comment\nCONFMAN_FLAGS__NAME='from file'\nOTHER=1\nCONFMAN_FLAGS__RATIO=0.25\n"
    )
    source = DotEnvSource(path)
    found = {o.dotted: (o.value, o.layer, o.origin) for o in source.overrides("flags", keyed=False)}
    assert found == {
        "name": ("from file", Layer.ENV_FILE, f"CONFMAN_FLAGS__NAME in {path}"),
        "ratio": (0.25, Layer.ENV_FILE, f"CONFMAN_FLAGS__RATIO in {path}"),
    }


def test_missing_file_is_empty(tmp_path: Path) -> None:
    assert DotEnvSource(tmp_path / "absent.env").overrides("flags", keyed=False) == []


async def test_bad_value_in_a_file_names_file_and_variable(tmp_path: Path) -> None:
    path = tmp_path / "local.env"
    path.write_text("CONFMAN_FLAGS__RATIO=2\n")
    with pytest.raises(ConfigSourceError) as caught:
        async with temporary_hub(tmp_path, managers=[FlagsManager], env={}, env_files=[path]):
            pass
    assert caught.value.source == f"CONFMAN_FLAGS__RATIO in {path}"
    assert caught.value.paths == ("ratio",)
