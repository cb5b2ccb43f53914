"""The provider's JSON Schema says when a field left optional by its type is required,
and says exactly what the model's validation enforces (forms show it)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from confman.managers.model_provider import ModelProvider, ProviderType

# A document each type accepts, minus the field under test where noted.
COMPLETE: dict[str, Any] = {
    "base_url": "https://example.test/v1",
    "api_key": "sk-test",
    "aws_region": "us-east-1",
}


def _accepts(provider_type: ProviderType, without: str) -> bool:
    document = {"type": provider_type.value, **COMPLETE}
    if provider_type is ProviderType.AZURE_OPENAI:
        document["api_version"] = "2024-06-01"
    if provider_type is not ProviderType.BEDROCK:
        document.pop("aws_region")
    document.pop(without, None)
    try:
        ModelProvider.model_validate(document)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("field", ["api_key", "base_url", "api_version", "aws_region"])
def test_required_when_matches_the_validation(field: str) -> None:
    note = ModelProvider.model_json_schema()["properties"][field]["x-required-when"]
    required_for = set(note["type"])
    assert required_for
    for provider_type in ProviderType:
        needed = not _accepts(provider_type, without=field)
        assert needed == (provider_type.value in required_for), (field, provider_type)
