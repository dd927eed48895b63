"""Validate a config against a JSON schema, fill defaults, and explain errors.

Messages name the field by its dotted path, say what was expected, and for unknown
keys suggest the closest valid name. Used for run configs (grades.train) and for the
workflow config (Snakefile), so both fail the same way before anything runs.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

from .config import ConfigError, closest


def load_schema(name_or_path: str | Path) -> dict:
    p = Path(name_or_path)
    if p.exists():
        return yaml.safe_load(p.read_text())
    return yaml.safe_load(resources.files("grades.schemas").joinpath(f"{name_or_path}.schema.yaml").read_text())


def _path(err) -> str:
    parts = [str(p) for p in err.absolute_path]
    return ".".join(parts) if parts else "(top level)"


def _explain(err, where: str) -> str:
    field = _path(err)
    v = err.validator
    if v == "additionalProperties":
        allowed = list(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed))
        bad = extra[0] if extra else "?"
        prefix = f"{field}." if field != "(top level)" else ""
        return (f"{where}: unknown key '{prefix}{bad}'{closest(bad, allowed)}; "
                f"valid keys here: {sorted(allowed)}")
    if v == "required":
        missing = [r for r in err.validator_value if r not in err.instance]
        prefix = f"{field}." if field != "(top level)" else ""
        return f"{where}: missing required field '{prefix}{missing[0] if missing else '?'}'"
    if v == "enum":
        return (f"{where}: {field} = {err.instance!r} is not allowed{closest(err.instance, err.validator_value)}; "
                f"choose one of {err.validator_value}")
    if v in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        return f"{where}: {field} = {err.instance!r} is out of range ({v} {err.validator_value})"
    if v == "type":
        return f"{where}: {field} = {err.instance!r} has the wrong type; expected {err.validator_value}"
    if v in ("oneOf", "anyOf"):
        desc = err.schema.get("description", "")
        return f"{where}: {field} = {err.instance!r} is invalid{': ' + desc if desc else ''}"
    return f"{where}: {field}: {err.message}"


def _fill_defaults(instance, schema: dict):
    if not isinstance(instance, dict) or schema.get("type") not in (None, "object"):
        return instance
    props = schema.get("properties", {})
    for key, sub in props.items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance and isinstance(instance[key], dict):
            _fill_defaults(instance[key], sub)
    addl = schema.get("additionalProperties")
    if isinstance(addl, dict):
        for key, val in instance.items():
            if key not in props and isinstance(val, dict):
                _fill_defaults(val, addl)
    return instance


def validate(config: dict, schema: dict | str | Path, where: str = "config") -> dict:
    """Return a copy of ``config`` with defaults filled; raise ConfigError on the first problem."""
    if isinstance(schema, (str, Path)):
        schema = load_schema(schema)
    if not isinstance(config, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level, got {type(config).__name__}")
    cfg = _fill_defaults(copy.deepcopy(config), schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: (len(list(e.absolute_path)), str(e.absolute_path)))
    if errors:
        # prefer the most specific error inside a oneOf/anyOf
        err = errors[0]
        if err.context:
            err = max(err.context, key=lambda e: len(list(e.absolute_path)))
        raise ConfigError(_explain(err, where))
    return cfg
