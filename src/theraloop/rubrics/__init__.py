"""Rubrics as data: sets of dimensions with integer scales and anchors, bundled or user YAML."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml
from pydantic import Field, field_validator, model_validator

from theraloop.config import StrictModel
from theraloop.io import InputError


class Scale(StrictModel):
    min: int
    max: int

    @model_validator(mode="after")
    def _ordered(self) -> Scale:
        if self.max <= self.min:
            raise ValueError("scale.max must be greater than scale.min")
        return self

    @property
    def levels(self) -> list[int]:
        return list(range(self.min, self.max + 1))


class Dimension(StrictModel):
    key: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    name: str
    question: str
    group: str | None = None
    anchors: dict[int, str]


class Rubric(StrictModel):
    name: str
    title: str
    description: str = ""
    scale: Scale
    safety_dimension: str | None = None
    dimensions: list[Dimension]

    @field_validator("dimensions")
    @classmethod
    def _unique_keys(cls, dimensions: list[Dimension]) -> list[Dimension]:
        keys = [dimension.key for dimension in dimensions]
        duplicates = sorted({key for key in keys if keys.count(key) > 1})
        if duplicates:
            raise ValueError(f"duplicate dimension keys: {duplicates}")
        if not dimensions:
            raise ValueError("a rubric needs at least one dimension")
        return dimensions

    @model_validator(mode="after")
    def _consistent(self) -> Rubric:
        levels = set(self.scale.levels)
        for dimension in self.dimensions:
            if set(dimension.anchors) != levels:
                raise ValueError(f"dimension '{dimension.key}': anchors must cover exactly the levels {sorted(levels)}")
        if self.safety_dimension is not None and self.safety_dimension not in self.keys:
            raise ValueError(f"safety_dimension '{self.safety_dimension}' is not a dimension key")
        return self

    @property
    def keys(self) -> list[str]:
        return [dimension.key for dimension in self.dimensions]

    def dimension(self, key: str) -> Dimension:
        for dimension in self.dimensions:
            if dimension.key == key:
                return dimension
        raise KeyError(f"rubric '{self.name}' has no dimension '{key}' (has: {', '.join(self.keys)})")

    def subset(self, keys: list[str]) -> Rubric:
        chosen = [self.dimension(key) for key in keys]
        safety = self.safety_dimension if self.safety_dimension in keys else None
        return self.model_copy(update={"dimensions": chosen, "safety_dimension": safety})


def bundled_rubrics() -> list[str]:
    return sorted(path.name.removesuffix(".yaml") for path in resources.files(__name__).iterdir()
                  if path.name.endswith(".yaml"))


def load_rubric(name_or_path: str | Path) -> Rubric:
    """A bundled rubric by name (therajudge, modpo, gricean, epitome) or a user YAML file."""
    candidate = Path(name_or_path)
    if candidate.suffix in {".yaml", ".yml"} or candidate.exists():
        if not candidate.exists():
            raise InputError(f"{candidate}: rubric file not found")
        text, source = candidate.read_text(encoding="utf-8"), str(candidate)
    else:
        resource = resources.files(__name__) / f"{name_or_path}.yaml"
        if not resource.is_file():
            raise InputError(f"unknown rubric '{name_or_path}'; bundled: {', '.join(bundled_rubrics())}, or give a YAML path")
        text, source = resource.read_text(encoding="utf-8"), f"rubric '{name_or_path}'"
    try:
        return Rubric.model_validate(yaml.safe_load(text))
    except yaml.YAMLError as exc:
        raise InputError(f"{source}: not valid YAML: {exc}") from None
    except ValueError as exc:
        raise InputError(f"{source}: {exc}") from None


__all__ = ["Dimension", "Rubric", "Scale", "bundled_rubrics", "load_rubric"]
