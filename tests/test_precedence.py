"""defaults < database < .env < local.env < environment, and `explain` telling which."""

from __future__ import annotations

from pathlib import Path

from confman import Layer
from confman.testing import record_changes, temporary_hub
from tests.models import FlagsManager


async def test_each_layer_beats_the_one_below(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    local = tmp_path / "local.env"
    dotenv.write_text(
        "CONFMAN_FLAGS__NAME=dotenv\nCONFMAN_FLAGS__RATIO=0.2\nCONFMAN_FLAGS__LIMITS__BURST=3\n"
    )
    local.write_text("CONFMAN_FLAGS__RATIO=0.3\nCONFMAN_FLAGS__LIMITS__RPM=7\n")
    env = {"CONFMAN_FLAGS__LIMITS__RPM": "9"}
    async with temporary_hub(
        tmp_path, managers=[FlagsManager], env=env, env_files=[dotenv, local]
    ) as hub:
        flags = hub.manager(FlagsManager)
        await flags.update(
            {"enabled": True, "name": "db", "ratio": 0.9, "limits": {"rpm": 1, "burst": 1}}
        )
        current = flags.current
        assert current.enabled is True  # database over default
        assert current.name == "dotenv"  # .env over database
        assert current.ratio == 0.3  # local.env over .env
        assert current.limits.burst == 3  # .env over database, nested
        assert current.limits.rpm == 9  # environment over local.env
        assert current.tags == []  # default

        sources = {s.path: s for s in flags.explain()}
        assert sources["tags"].layer is Layer.DEFAULT
        assert (sources["enabled"].layer, sources["enabled"].detail) == (Layer.DATABASE, "base v1")
        assert sources["name"].layer is Layer.ENV_FILE
        assert sources["name"].detail == f"CONFMAN_FLAGS__NAME in {dotenv}"
        assert sources["ratio"].detail == f"CONFMAN_FLAGS__RATIO in {local}"
        rpm = sources["limits.rpm"]
        assert (rpm.layer, rpm.detail, rpm.value) == (
            Layer.ENVIRONMENT,
            "environment variable CONFMAN_FLAGS__LIMITS__RPM",
            9,
        )
        # Everything the variable beat is listed, lowest first.
        assert rpm.shadows == (
            "database (base v1)",
            f"env_file (CONFMAN_FLAGS__LIMITS__RPM in {local})",
        )


async def test_write_to_a_pinned_field_is_stored_but_not_effective(tmp_path: Path) -> None:
    env = {"CONFMAN_FLAGS__RATIO": "0.1"}
    async with temporary_hub(tmp_path, managers=[FlagsManager], env=env) as hub:
        flags = hub.manager(FlagsManager)
        seen = record_changes(flags)
        change = await flags.update({"ratio": 0.8}, actor="ops", reason="try")
        assert flags.current.ratio == 0.1
        assert change.version == 1
        assert change.changed_fields == ()
        assert change.pinned == ("ratio",)
        assert not change.effective
        # Audited all the same.
        (record,) = await flags.history()
        assert record.after == {"ratio": 0.8}
        assert record.actor == "ops"
        # The stream carries the commit, and says nothing effective changed.
        assert [c.changed_fields for c in seen.changes] == [()]
        ratio = next(s for s in flags.explain() if s.path == "ratio")
        assert ratio.shadows == ("database (base v1)",)
        # observe() emits only distinct effective values: nothing new here.
        values: list[float] = []
        flags.select(lambda f: f.ratio).subscribe(values.append)
        await flags.update({"ratio": 0.7})
        assert values == [0.1]


async def test_secret_override_is_masked_in_explain(tmp_path: Path) -> None:
    secret = "sk-override-secret"
    env = {"CONFMAN_FLAGS__TOKEN": secret}
    async with temporary_hub(tmp_path, managers=[FlagsManager], env=env) as hub:
        flags = hub.manager(FlagsManager)
        token = next(s for s in flags.explain() if s.path == "token")
        assert secret not in str(token.value)
        assert str(token.value).startswith("**********#")
        assert flags.current.token is not None
        assert flags.current.token.get_secret_value() == secret
