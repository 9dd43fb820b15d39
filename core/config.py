"""Config files: pydantic models read from YAML, with errors that name the file and the field.

A config file overrides a base config (a preset) field by field: nested mappings merge, any
other value (a list included) replaces the base's. Unknown fields are errors, not silently
ignored: a typo such as ``stpes: 8000`` would otherwise train the default recipe for an hour
and publish it as if the override had applied.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from core.errors import InputError
from core.io import read_yaml_mapping

M = TypeVar("M", bound=BaseModel)


class StrictConfig(BaseModel):
    """A config model that refuses fields it does not define."""

    model_config = ConfigDict(extra="forbid")


def drop_unset(data: Any, **unset: Any) -> Any:
    """A model dump without the named fields that hold their "unset" value.

    For fields added after cache keys were first made from a config's dump: while such a
    field is unset, the dump (and so every key made from it) is what it was before the field existed.
    """
    if isinstance(data, dict):
        for key, value in unset.items():
            if key in data and data[key] == value:
                del data[key]
    return data


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` applied: mappings merge key by key, other values replace."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def load_config(cls: type[M], path: str | Path, base: M | None = None) -> M:
    """``cls`` from the YAML (or JSON) mapping in ``path``, applied over ``base`` when given.

    Raises ``InputError`` naming ``path:field`` and the problem for the first invalid field.
    """
    data = read_yaml_mapping(path, f"a mapping of {cls.__name__} fields")
    if base is not None:
        data = merged(base.model_dump(mode="json"), data)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(x) for x in first["loc"]) or "(top level)"
        got = first.get("input")
        shown = "" if first["type"] == "extra_forbidden" or isinstance(got, dict | list) else f" (got {got!r})"
        problem = "is not a field of this config" if first["type"] == "extra_forbidden" else first["msg"] + shown
        more = len(exc.errors()) - 1
        if more:
            problem += f"; and {more} more invalid field{'s' if more > 1 else ''}"
        raise InputError(f"{path}:{field}", problem, f"a valid {cls.__name__}") from exc
