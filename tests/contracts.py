"""Validate records against the published JSON Schemas in ``schemas/`` (what tests check the job emits)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


@cache
def validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{name}.json").read_text())
    return Draft202012Validator(schema, format_checker=FormatChecker())


def problems(name: str, record: Any) -> list[str]:
    """Every way ``record`` breaks schema ``name`` (empty: it conforms), each with its path."""
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validator(name).iter_errors(record)]


def check_all(name: str, records: list[Any]) -> None:
    """Assert that every record conforms to schema ``name``, naming the first few that do not."""
    bad = [(i, p) for i, r in enumerate(records) if (p := problems(name, r))]
    assert not bad, f"{len(bad)} of {len(records)} records break schemas/{name}.json: {bad[:3]}"
