"""Validate a config against a JSON schema, fill defaults, and explain errors.

Messages name the field by its dotted path, say what was expected, and for unknown
keys suggest the closest valid name. Used for run configs (grades.train) and for the
workflow config (Snakefile), so both fail the same way before anything runs.

Beyond the schema, every config is refused when a mapping key is not text (YAML reads
``on``, ``no``, ``1`` and ``~`` as a boolean, number or null) or a number anywhere in it
is NaN or infinite (:func:`check_finite`); an ``integer`` is an int, never ``10.0``.
"""

from __future__ import annotations

import copy
import math
from importlib import resources
from pathlib import Path

import jsonschema

from .config import ConfigError, closest
from .yamlfile import parse_yaml, read_yaml


def load_schema(name_or_path: str | Path) -> dict:
    p = Path(name_or_path)
    if p.exists():
        return read_yaml(p, "schema")
    res = resources.files("grades.schemas").joinpath(f"{name_or_path}.schema.yaml")
    return parse_yaml(res.read_text(), str(res))


def _strict_integers():
    """The draft-2020-12 validator with ``integer`` meaning an int (not ``10.0``, not a boolean)."""
    from jsonschema import validators

    base = jsonschema.Draft202012Validator
    checker = base.TYPE_CHECKER.redefine("integer", lambda _c, x: isinstance(x, int) and not isinstance(x, bool))
    return validators.extend(base, type_checker=checker)


Validator = _strict_integers()


def check_finite(doc, where: str = "config", path: str = "") -> None:
    """Refuse NaN and infinite numbers and mapping keys that are not text, anywhere in ``doc``."""
    if isinstance(doc, float) and not math.isfinite(doc):
        raise ConfigError(f"{where}: {path or '(top level)'} = {doc!r} is not a finite number; give a number "
                          f"such as 1.0e-4 (NaN and infinity are never valid settings)")
    if isinstance(doc, dict):
        for k, v in doc.items():
            if not isinstance(k, str):
                at = f" under {path}" if path else ""
                raise ConfigError(f"{where}: key {k!r}{at} is not text; YAML reads yes/no/on/off/true/false, "
                                  f"numbers and ~ as values: quote it ('{k}')")
            check_finite(v, where, f"{path}.{k}" if path else k)
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            check_finite(v, where, f"{path}[{i}]")


def _number_hint(value) -> str:
    """A hint for a number that arrived as text ('1e-5' in YAML 1.1, or quoted)."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ""
        return (" (a number written as text: remove the quotes, and write exponents with a decimal point, "
                "1.0e-5 rather than 1e-5, which YAML reads as text)")
    if isinstance(value, float) and value.is_integer():
        return f" (write {int(value)}, without a decimal point)"
    return ""


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
        want = err.validator_value
        hint = _number_hint(err.instance) if "number" in str(want) or "integer" in str(want) else ""
        return f"{where}: {field} = {err.instance!r} has the wrong type; expected {want}{hint}"
    if v == "uniqueItems":
        seen: list = []
        dup = next((x for x in err.instance if x in seen or seen.append(x)), None)
        return f"{where}: {field} lists {dup!r} more than once; give each value once"
    if v == "pattern":
        desc = err.schema.get("description", "")
        return f"{where}: {field} = {err.instance!r} is refused: {desc or 'it must match ' + err.validator_value}"
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
    check_finite(config, where)
    cfg = _fill_defaults(copy.deepcopy(config), schema)
    validator = Validator(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: (len(list(e.absolute_path)), str(e.absolute_path)))
    if errors:
        # prefer the most specific error inside a oneOf/anyOf
        err = errors[0]
        if err.context:
            err = max(err.context, key=lambda e: len(list(e.absolute_path)))
        raise ConfigError(_explain(err, where))
    return cfg
