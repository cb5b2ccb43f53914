"""The process-environment source: naming, parsing, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from confman import ConfigSourceError, Layer
from confman.sources import EnvironmentSource
from confman.testing import temporary_hub
from tests.models import FlagsManager, ItemsManager


def test_names_map_to_fields_and_values_parse_as_json_where_they_can() -> None:
    source = EnvironmentSource(
        {
            "CONFMAN_FLAGS__ENABLED": "true",
            "CONFMAN_FLAGS__LIMITS__RPM": "120",
            "CONFMAN_FLAGS__NAME": "plain text",
            "CONFMAN_FLAGS__TAGS": '["a", "b"]',
            "CONFMAN_OTHER__X": "1",
            "UNRELATED": "1",
        }
    )
    found = {o.dotted: o.value for o in source.overrides("flags", keyed=False)}
    assert found == {"enabled": True, "limits.rpm": 120, "name": "plain text", "tags": ["a", "b"]}


def test_collection_variables_name_the_key() -> None:
    source = EnvironmentSource({"CONFMAN_ITEMS__FIRST__WEIGHT": "3"})
    (override,) = source.overrides("items", keyed=True)
    assert (override.key, override.path, override.value) == ("first", ("weight",), 3)
    assert override.layer is Layer.ENVIRONMENT
    assert override.origin == "environment variable CONFMAN_ITEMS__FIRST__WEIGHT"


def test_prefix_is_configurable() -> None:
    source = EnvironmentSource({"ACME_FLAGS__ENABLED": "1"}, prefix="ACME_")
    assert [o.dotted for o in source.overrides("flags", keyed=False)] == ["enabled"]


async def test_unknown_field_fails_at_start_up_naming_the_variable(tmp_path: Path) -> None:
    env = {"CONFMAN_FLAGS__LIMITS__RPN": "5"}
    with pytest.raises(ConfigSourceError) as caught:
        async with temporary_hub(tmp_path, managers=[FlagsManager], env=env):
            pass
    assert "CONFMAN_FLAGS__LIMITS__RPN" in str(caught.value)
    assert "limits.rpn" in str(caught.value)


async def test_wrong_type_fails_at_start_up_naming_variable_and_field(tmp_path: Path) -> None:
    env = {"CONFMAN_FLAGS__LIMITS__RPM": "many"}
    with pytest.raises(ConfigSourceError) as caught:
        async with temporary_hub(tmp_path, managers=[FlagsManager], env=env):
            pass
    assert caught.value.source == "environment variable CONFMAN_FLAGS__LIMITS__RPM"
    assert caught.value.paths == ("limits.rpm",)


async def test_bad_secret_override_never_shows_the_value(tmp_path: Path) -> None:
    secret = "sk-live-very-secret-value"
    env = {"CONFMAN_FLAGS__TOKEN": '{"not": "a string"}', "CONFMAN_FLAGS__RATIO": "7"}
    with pytest.raises(ConfigSourceError) as caught:
        async with temporary_hub(tmp_path, managers=[FlagsManager], env=env):
            pass
    assert "not" not in str(caught.value).split("refused")[0]
    env = {"CONFMAN_FLAGS__TOKEN": secret, "CONFMAN_FLAGS__RATIO": "7"}
    with pytest.raises(ConfigSourceError) as caught:
        async with temporary_hub(tmp_path, managers=[FlagsManager], env=env):
            pass
    assert secret not in str(caught.value)
    assert secret not in repr(caught.value)


async def test_collection_override_applies_to_its_item(tmp_path: Path) -> None:
    env = {"CONFMAN_ITEMS__FIRST__WEIGHT": "9"}
    async with temporary_hub(tmp_path, managers=[ItemsManager], env=env) as hub:
        items = hub.manager(ItemsManager)
        await items.create("first", {"title": "one", "weight": 2})
        await items.create("second", {"title": "two", "weight": 2})
        assert items.get("first").weight == 9
        assert items.get("second").weight == 2


async def test_text_fields_keep_the_text_as_written(tmp_path: Path) -> None:
    # JSON would read these as a number and a removal; for a text field they are text.
    env = {"CONFMAN_FLAGS__TOKEN": "12345", "CONFMAN_FLAGS__NAME": "null"}
    async with temporary_hub(tmp_path, managers=[FlagsManager], env=env) as hub:
        current = hub.manager(FlagsManager).current
        assert current.token is not None
        assert current.token.get_secret_value() == "12345"
        assert current.name == "null"
