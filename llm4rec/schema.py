"""The grid config schema, llm4rec/schema.yaml: every key a grid may hold, its type and, where
it has one, its default.

The schema is the one place a grid default is written: `validate` fills the defaults into the
grid as it is loaded (llm4rec.config), and code that needs one without a grid reads it here
(`defaults`, e.g. the report's options).
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).with_name("schema.yaml")  # package data: any install finds it


@functools.cache
def _schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _fill_defaults(validator, properties, instance, schema):
    """JSON Schema's `properties`, which first gives a mapping each declared default it lacks (the
    filled value is then validated like a given one, and its own properties filled in turn)."""
    if validator.is_type(instance, "object"):
        for key, declared in properties.items():
            if "default" in declared and key not in instance:
                instance[key] = copy.deepcopy(declared["default"])
    yield from jsonschema.Draft202012Validator.VALIDATORS["properties"](
        validator, properties, instance, schema
    )


_FillingValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator, {"properties": _fill_defaults}
)


def validate(raw: dict[str, Any]) -> tuple[dict[str, Any], list[jsonschema.ValidationError]]:
    """(a copy of the grid `raw` with the schema's defaults filled in, the schema's errors in key
    path order)."""
    filled = copy.deepcopy(raw)
    errors = sorted(
        _FillingValidator(_schema()).iter_errors(filled), key=lambda e: list(e.absolute_path)
    )
    return filled, errors


def defaults(*path: str) -> dict[str, Any]:
    """The defaults the schema declares for the keys of one mapping of a grid, e.g.
    defaults("report") -> {"metrics": [...], "test": "t", ...}."""
    node = _schema()
    for key in path:
        node = node["properties"][key]
    return {
        key: copy.deepcopy(declared["default"])
        for key, declared in node.get("properties", {}).items()
        if "default" in declared
    }


def schema_node(*path: str) -> dict[str, Any]:
    """The declared properties of the mapping at `path` (each step a property name, or a keyword
    such as additionalProperties), e.g. schema_node("datasets", "additionalProperties", "split")."""
    node = _schema()
    for key in path:
        node = node[key] if key in node else node["properties"][key]
    return copy.deepcopy(node.get("properties", {}))
