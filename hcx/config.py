"""Typed configuration loaded from YAML recipes.

A recipe is one YAML file with a section per stage (``data``, ``tokenizer``,
``pretrain``, ...). Each stage validates its own section with its own pydantic model,
whose defaults are the SPEC's numbers. Strings may use ``${data_dir}`` (the shared
data directory, see :mod:`hcx.paths`), ``${recipe_dir}`` and ``${env:NAME}``.
Command-line overrides are ``section.key.sub=value`` strings, values parsed as YAML.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from hcx.paths import find_data_dir

T = TypeVar("T", bound=BaseModel)
_VAR = re.compile(r"\$\{([^}]+)\}")


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the file and the field."""


class Section(BaseModel):
    """Base for every stage's configuration: unknown keys are errors, not ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def read_recipe(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: invalid YAML: {exc}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping of sections, got {type(raw).__name__}")
    return raw


def apply_overrides(raw: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides in place (value parsed as YAML) and return ``raw``."""
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RecipeError(f"override {item!r} must look like section.key=value")
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise RecipeError(f"override {item!r}: {part!r} is not a mapping")
            node = child
        node[parts[-1]] = yaml.safe_load(value)
    return raw


def _substitute(value: Any, variables: dict[str, str], where: str) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, variables, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, variables, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("env:"):
            env = name[4:]
            if env not in os.environ:
                raise RecipeError(f"{where}: environment variable {env} is not set")
            return os.environ[env]
        if name == "data_dir" and name not in variables:
            variables[name] = str(find_data_dir())
        if name not in variables:
            raise RecipeError(f"{where}: unknown variable ${{{name}}}")
        return variables[name]

    return _VAR.sub(replace, value)


def expand_variables(value: str) -> str:
    """``${data_dir}`` and ``${env:NAME}`` in one string, for configs built without a recipe file."""
    return _substitute(value, {}, "value")


def _format_validation(error: ValidationError, path: Path, section: str) -> str:
    lines = [f"{path}: invalid section '{section}':"]
    for err in error.errors():
        loc = ".".join(str(p) for p in (section, *err["loc"]))
        lines.append(f"  {loc}: {err['msg']}")
    return "\n".join(lines)


def load_section(
    path: str | Path,
    section: str,
    model: type[T],
    overrides: list[str] | None = None,
    variables: dict[str, str] | None = None,
) -> T:
    """Load and validate one section of a recipe, with overrides and variables applied."""
    path = Path(path)
    raw = apply_overrides(read_recipe(path), overrides)
    body = raw.get(section)
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise RecipeError(f"{path}: section '{section}' must be a mapping")
    scope = {"recipe_dir": str(path.resolve().parent), **(variables or {})}
    try:
        # Validate twice: once to fill in defaults (which may use variables too), once after substitution.
        filled = model.model_validate(body).model_dump()
        return model.model_validate(_substitute(filled, scope, f"{path}:{section}"))
    except ValidationError as exc:
        raise RecipeError(_format_validation(exc, path, section)) from None
