"""Load a run config: yaml file + omegaconf dot-list overrides, checked against the schema."""
from __future__ import annotations

import dataclasses
import difflib
import typing
from pathlib import Path
from typing import Sequence

from omegaconf import OmegaConf

from llmshearing.config.schema import TrainConfig
from llmshearing.errors import ConfigError


def _section_type(annotation):
    """The dataclass behind a field annotation (unwrapping Optional), or None."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if dataclasses.is_dataclass(candidate):
            return candidate
    return None


def check_keys(values: dict, schema=TrainConfig, prefix: str = "") -> None:
    """Raise ConfigError naming the first unknown key and the nearest valid one."""
    hints = typing.get_type_hints(schema)
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in hints:
            nearest = difflib.get_close_matches(str(key), list(hints), n=1)
            suggestion = f"; did you mean '{prefix}{nearest[0]}'?" if nearest else ""
            raise ConfigError(f"unknown config key '{full}'{suggestion}")
        section = _section_type(hints[key])
        if section is not None and isinstance(value, dict):
            check_keys(value, section, prefix=f"{full}.")


def check_choices(config, prefix: str = "") -> None:
    """Raise ConfigError naming the first ``one_of`` field whose value is not one of its choices."""
    for item in dataclasses.fields(config):
        value, full = getattr(config, item.name), f"{prefix}{item.name}"
        if dataclasses.is_dataclass(value):
            check_choices(value, prefix=f"{full}.")
        choices = item.metadata.get("choices")
        if choices is None or value in choices or (value is None and item.metadata["optional"]):
            continue
        nearest = difflib.get_close_matches(str(value), choices, n=1)
        suggestion = f" (did you mean '{nearest[0]}'?)" if nearest else ""
        allowed = ", ".join(choices) + (", null" if item.metadata["optional"] else "")
        raise ConfigError(f"{full} must be one of {allowed}; got '{value}'{suggestion}")


def load_config(yaml_path, overrides: Sequence[str] = ()) -> TrainConfig:
    path = Path(yaml_path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        merged = OmegaConf.merge(OmegaConf.load(path), OmegaConf.from_dotlist(list(overrides)))
    except Exception as exc:  # noqa: BLE001 - yaml and dot-list syntax errors
        raise ConfigError(f"cannot read config {path}: {exc}".splitlines()[0]) from exc
    values = OmegaConf.to_container(merged, resolve=True) or {}
    if not isinstance(values, dict):
        raise ConfigError(f"config {path} must be a mapping at the top level")
    check_keys(values)
    try:
        typed = OmegaConf.merge(OmegaConf.structured(TrainConfig), values)
    except Exception as exc:  # noqa: BLE001 - omegaconf validation errors (wrong types)
        raise ConfigError(f"invalid config value: {exc}".splitlines()[0]) from exc
    config = OmegaConf.to_object(typed)
    check_choices(config)
    return config
