"""Load YAML/JSON configuration into pydantic models with messages that name file, field and reason.

Every configuration file of the project (taxonomy, scenes, cameras, service settings) goes
through `load_model`, so a bad file is refused the same way everywhere:
`scenes/cam-01.yaml: zones.0.polygon: polygon needs at least 3 points`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names file, field and reason."""


def read_mapping(path: str | Path) -> dict[str, Any]:
    """Parse a YAML or JSON file whose top level must be a mapping."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def validation_message(source: str, exc: ValidationError) -> str:
    """One line per problem: `source: dotted.field: reason`."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"{source}: {where}: {err['msg']}")
    return "\n".join(lines)


def validate_model(model: type[M], data: Any, source: str) -> M:
    """Validate already-parsed data; `source` names where it came from (file, request, camera)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_message(source, exc)) from None


def load_model(model: type[M], path: str | Path) -> M:
    """Read a YAML/JSON file and validate it as `model`."""
    return validate_model(model, read_mapping(path), str(path))
