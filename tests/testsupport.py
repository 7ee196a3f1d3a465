"""Helpers shared by every tier (imported as `testsupport`; tests/ is on pytest's pythonpath)."""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EVENTS = REPO / "events"


def load_event(name: str) -> dict:
    """The sample Lambda events under events/, shared with `sam local invoke -e`."""
    return json.loads((EVENTS / name).read_text())


def assert_matches_schema(document: dict, schema_name: str) -> None:
    """Checks a report or event detail against the JSON Schema published under events/schemas/."""
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    schemas = {path.name: json.loads(path.read_text()) for path in (EVENTS / "schemas").glob("*.json")}
    registry = Registry().with_resources((schema["$id"], Resource.from_contents(schema)) for schema in schemas.values())
    validator = Draft202012Validator(schemas[schema_name], registry=registry)
    errors = sorted(validator.iter_errors(document), key=lambda error: list(error.path))
    assert not errors, [f"{list(error.path)}: {error.message}" for error in errors]
