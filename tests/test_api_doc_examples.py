"""docs/api.md's JSON and stream examples are not executed (only ``python`` blocks are, by
test_docs.py): these checks keep the field names and values they show real."""

from __future__ import annotations

import json
import re
from pathlib import Path

from confman.managers.cache import CacheConfig

DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"
JSON_BLOCK = re.compile(r"^```json\n(.*?)^```", re.S | re.M)


def test_every_field_the_examples_name_is_a_cache_field() -> None:
    text = DOC.read_text()
    named = re.findall(r'"path": "([\w.]+)"', text)
    for listed in re.findall(r'"changed": \[([^\]]*)\]', text):
        named += re.findall(r'"(\w+)"', listed)
    named += [name.lower() for name in re.findall(r"CONFMAN_CACHE__(\w+)", text)]
    named += re.findall(r"refused \(source: \w+\): (\w+):", text)
    assert len(named) >= 5, named  # the examples are still there to check
    unknown = sorted({n for n in named if n.split(".")[0] not in CacheConfig.model_fields})
    assert unknown == [], f"docs/api.md names fields the cache model lacks: {unknown}"


def test_the_example_documents_hold_valid_values() -> None:
    blocks = [json.loads(b) for b in JSON_BLOCK.findall(DOC.read_text())]
    documents = [b for b in blocks if b.get("namespace") == "cache" and "value" in b]
    assert documents
    for document in documents:
        CacheConfig.model_validate(document["value"])
