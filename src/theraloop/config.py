"""Command configuration: YAML files validated by pydantic, overridden by command-line flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from theraloop.io import InputError

C = TypeVar("C", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for configs: unknown keys are errors, so a typo in YAML never passes silently."""

    model_config = ConfigDict(extra="forbid")


def _set_dotted(target: dict, dotted_key: str, value: Any) -> None:
    parts = dotted_key.split(".")
    for part in parts[:-1]:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise InputError(f"config key '{dotted_key}': '{part}' is not a section")
    target[parts[-1]] = value


def load_config(cls: type[C], path: str | Path | None = None, **overrides: Any) -> C:
    """Build `cls` from an optional YAML file, then apply flag overrides (None means 'not given').

    Override keys may be dotted (`llm.model`) to reach nested sections.
    """
    data: dict = {}
    source = "flags"
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise InputError(f"{path}: config file not found")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise InputError(f"{path}: not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise InputError(f"{path}: expected a mapping at the top level")
        data = loaded or {}
        source = str(path)
    for key, value in overrides.items():
        if value is not None:
            _set_dotted(data, key, value)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        problems = []
        for item in exc.errors():
            field = ".".join(str(part) for part in item["loc"]) or "<config>"
            problems.append(f"field '{field}': {item['msg']}")
        raise InputError(f"{source}: " + "; ".join(problems)) from None


def dump_config(config: BaseModel, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
