"""Patient personas: who ranks candidate responses in the preference stage and the arena.

A persona is a profile (demographics, mental-health background, technology experience, attitude
to AI, how much each MODPO criterion matters to them, what they would use an AI for) that an LLM
role-plays. Personas come from a survey export (CSV + a YAML column mapping) or from a seeded
synthetic sampler.

Ids are content hashes: `p-` + the first 12 hex digits of the sha256 of the persona's canonical JSON
(every field but the id). Unlike numbering ("P0001" by position), a content id does not change when
personas are added, removed or reordered, is the same on every machine, and is unique in practice
(48 bits: a collision among 10,000 personas has probability ~2e-7), so ballots recorded against an
id stay valid when the persona file grows.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from theraloop.io import InputError, canonical_json
from theraloop.rubrics import load_rubric

AgeBand = Literal["18-24", "25-34", "35-44", "45-54", "55-64", "65+"]
TherapyExperience = Literal["none", "past", "current"]
TechnologyExperience = Literal["low", "medium", "high"]
AIAttitude = Literal["very negative", "negative", "neutral", "positive", "very positive"]

# The MODPO survey criteria every persona weighs; read from the bundled rubric so they cannot drift.
CRITERIA: tuple[str, ...] = tuple(load_rubric("modpo").keys)


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Demographics(_Record):
    age_band: AgeBand
    gender: str = Field(min_length=1)
    region: str = Field(min_length=1, description="country or region")
    education: str = Field(min_length=1)


class MentalHealthBackground(_Record):
    conditions: tuple[str, ...] = ()
    therapy_experience: TherapyExperience


class Persona(_Record):
    """One patient persona. `id` is derived from the content when not given (see module docstring)."""

    id: str = ""
    demographics: Demographics
    mental_health: MentalHealthBackground
    technology_experience: TechnologyExperience
    ai_attitude: AIAttitude
    importance: dict[str, Annotated[int, Field(ge=1, le=5)]] = Field(
        description="1-5 importance of each MODPO criterion")
    appropriate_uses: tuple[str, ...] = Field((), description="what this person thinks an AI is fit for")

    @field_validator("importance")
    @classmethod
    def _every_criterion_rated(cls, importance: dict[str, int]) -> dict[str, int]:
        missing = [key for key in CRITERIA if key not in importance]
        unknown = [key for key in importance if key not in CRITERIA]
        if missing or unknown:
            raise ValueError(f"must rate exactly the criteria {', '.join(CRITERIA)}"
                             + (f"; missing {', '.join(missing)}" if missing else "")
                             + (f"; unknown {', '.join(unknown)}" if unknown else ""))
        return {key: importance[key] for key in CRITERIA}

    @model_validator(mode="after")
    def _content_id(self) -> Persona:
        if not self.id:
            object.__setattr__(self, "id", persona_id(self))
        return self


def persona_id(persona: Persona) -> str:
    """`p-` + 12 hex digits of the sha256 of the canonical content (the id field excluded)."""
    content = persona.model_dump(mode="json", exclude={"id"})
    return "p-" + hashlib.sha256(canonical_json(content).encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------------------------
# The role-play prompt.

_IMPORTANCE_WORDS = {1: "barely matters", 2: "matters a little", 3: "matters", 4: "matters a lot", 5: "essential"}
_THERAPY_WORDS = {"none": "have never been in therapy", "past": "have been in therapy before",
                  "current": "are in therapy at the moment"}


def render_persona_prompt(persona: Persona) -> str:
    """A system prompt that makes an LLM answer as this person, not as a clinician."""
    rubric = load_rubric("modpo")
    demo, health = persona.demographics, persona.mental_health
    conditions = ", ".join(health.conditions) if health.conditions else "no diagnosed condition"
    ranked = sorted(CRITERIA, key=lambda key: (-persona.importance[key], CRITERIA.index(key)))
    priorities = "\n".join(f"- {rubric.dimension(key).name}: {_IMPORTANCE_WORDS[persona.importance[key]]} "
                           f"({persona.importance[key]}/5)" for key in ranked)
    uses = "; ".join(persona.appropriate_uses) if persona.appropriate_uses else "nothing in particular"
    return (
        "You are role-playing a real person who has asked for mental-health support online and is now "
        "reading replies to their post. Stay in character: judge the replies by what would help YOU, "
        "with your background and priorities, not by what a clinician would say.\n\n"
        f"## Who you are\n- Age: {demo.age_band}; gender: {demo.gender}; living in: {demo.region}; "
        f"education: {demo.education}.\n"
        f"- Mental health: {conditions}; you {_THERAPY_WORDS[health.therapy_experience]}.\n"
        f"- Experience with technology: {persona.technology_experience}. "
        f"Your attitude to AI in mental-health support: {persona.ai_attitude}.\n"
        f"- You think AI support is appropriate for: {uses}.\n\n"
        f"## What matters to you in a reply (most important first)\n{priorities}"
    )


# ---------------------------------------------------------------------------------------------
# Survey exports: a CSV, one respondent a row, and a YAML mapping from persona fields to columns.


class _ColumnSpec(BaseModel):
    """Where one persona field comes from. `values` recodes answers; `split` makes a list field."""

    model_config = ConfigDict(extra="forbid")

    column: str
    values: dict[str, Any] | None = None
    split: str | None = None
    default: Any = None


class SurveyMapping(BaseModel):
    """Persona field -> CSV column. Each entry is a column name or {column, values, split, default}."""

    model_config = ConfigDict(extra="forbid")

    demographics: dict[Literal["age_band", "gender", "region", "education"], str | _ColumnSpec]
    mental_health: dict[Literal["conditions", "therapy_experience"], str | _ColumnSpec]
    technology_experience: str | _ColumnSpec
    ai_attitude: str | _ColumnSpec
    importance: dict[str, str | _ColumnSpec]
    appropriate_uses: str | _ColumnSpec | None = None

    def fields(self) -> dict[str, _ColumnSpec]:
        """Dotted persona field -> column spec."""
        flat: dict[str, str | _ColumnSpec | None] = {
            **{f"demographics.{key}": value for key, value in self.demographics.items()},
            **{f"mental_health.{key}": value for key, value in self.mental_health.items()},
            "technology_experience": self.technology_experience,
            "ai_attitude": self.ai_attitude,
            **{f"importance.{key}": value for key, value in self.importance.items()},
            "appropriate_uses": self.appropriate_uses,
        }
        return {field: spec if isinstance(spec, _ColumnSpec) else _ColumnSpec(column=spec)
                for field, spec in flat.items() if spec is not None}


def _load_mapping(path: Path) -> SurveyMapping:
    if not path.is_file():
        raise InputError(f"{path}: survey mapping file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        return SurveyMapping.model_validate(raw)
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML: {exc}") from None
    except ValidationError as exc:
        problems = [f"'{'.'.join(str(p) for p in item['loc'])}': {item['msg']}" for item in exc.errors()]
        raise InputError(f"{path}: " + "; ".join(problems)) from None


def _cell(spec: _ColumnSpec, row: dict[str, str], where: str) -> Any:
    text = (row.get(spec.column) or "").strip()
    if not text:
        if spec.default is None:
            raise InputError(f"{where}: column '{spec.column}': empty answer and the mapping gives no default")
        return spec.default
    if spec.split is not None:
        parts = [part.strip() for part in text.split(spec.split) if part.strip()]
        return [_recode(spec, part, where) for part in parts]
    return _recode(spec, text, where)


def _recode(spec: _ColumnSpec, text: str, where: str) -> Any:
    if spec.values is None:
        return text
    if text not in spec.values:
        raise InputError(f"{where}: column '{spec.column}': answer {text!r} is not in the mapping's values "
                         f"({', '.join(map(repr, spec.values))})")
    return spec.values[text]


def _set_dotted(target: dict, dotted: str, value: Any) -> None:
    head, _, rest = dotted.partition(".")
    if rest:
        _set_dotted(target.setdefault(head, {}), rest, value)
    else:
        target[head] = value


def personas_from_survey(csv_path: str | Path, mapping_yaml: str | Path) -> list[Persona]:
    """One persona per respondent row, in file order; respondents with identical answers are one persona.

    Every mapped column must exist in the CSV header (the error names the missing column and lists
    the header); recoding and validation errors name the file, row and column.
    """
    csv_path, mapping_path = Path(csv_path), Path(mapping_yaml)
    mapping = _load_mapping(mapping_path)
    fields = mapping.fields()
    if not csv_path.is_file():
        raise InputError(f"{csv_path}: survey file not found")
    with open(csv_path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        for field, spec in fields.items():
            if spec.column not in header:
                raise InputError(f"{mapping_path}: field '{field}': column '{spec.column}' is not in {csv_path} "
                                 f"(columns: {', '.join(header)})")
        personas: dict[str, Persona] = {}
        for row in reader:
            where = f"{csv_path}:{reader.line_num}"
            record: dict = {}
            for field, spec in fields.items():
                _set_dotted(record, field, _cell(spec, row, where))
            try:
                persona = Persona.model_validate(record)
            except ValidationError as exc:
                item = exc.errors()[0]
                field = ".".join(str(part) for part in item["loc"])
                column = fields[field].column if field in fields else field
                raise InputError(f"{where}: column '{column}' (persona field '{field}'): {item['msg']}") from None
            personas.setdefault(persona.id, persona)
    if not personas:
        raise InputError(f"{csv_path}: no respondents")
    return list(personas.values())


# ---------------------------------------------------------------------------------------------
# The seeded synthetic sampler.

_AGE_BANDS: tuple[AgeBand, ...] = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
_AGE_WEIGHTS = (0.2, 0.24, 0.2, 0.15, 0.12, 0.09)
_GENDERS = ("woman", "man", "non-binary")
_GENDER_WEIGHTS = (0.49, 0.47, 0.04)
_REGIONS = ("United Kingdom", "United States", "Canada", "Ireland", "Australia", "India", "Nigeria", "Germany")
_EDUCATION = ("secondary school", "vocational training", "bachelor's degree", "postgraduate degree")
_CONDITIONS = ("depression", "generalised anxiety", "social anxiety", "PTSD", "bipolar disorder",
               "obsessive-compulsive disorder", "an eating disorder", "insomnia", "grief")
_USES = ("a first place to talk when feeling low", "coping strategies for anxiety", "support between therapy sessions",
         "information about mental-health conditions", "help finding professional services", "journaling and reflection",
         "practising difficult conversations")
_AI_ATTITUDES: tuple[AIAttitude, ...] = ("very negative", "negative", "neutral", "positive", "very positive")
# Survey respondents rated every criterion as at least moderately important and safety highest;
# the sampler draws each importance around these means.
_IMPORTANCE_MEANS = {"empathy": 4.3, "active_listening": 4.2, "self_motivated_change": 3.6, "trust_rapport": 4.1,
                     "patient_autonomy": 3.9, "safety": 4.6, "overall": 4.0}


def _sample_persona(rng: np.random.Generator) -> Persona:
    conditions = rng.choice(_CONDITIONS, size=rng.choice([0, 1, 2], p=[0.25, 0.5, 0.25]), replace=False)
    attitude_index = int(rng.choice(5, p=[0.08, 0.2, 0.32, 0.28, 0.12]))
    # People who like AI more find it appropriate for more things.
    uses = rng.choice(_USES, size=min(len(_USES), 1 + attitude_index), replace=False)
    importance = {key: int(np.clip(np.rint(rng.normal(_IMPORTANCE_MEANS[key], 0.8)), 1, 5)) for key in CRITERIA}
    return Persona(
        demographics=Demographics(age_band=_AGE_BANDS[rng.choice(6, p=_AGE_WEIGHTS)],
                                  gender=_GENDERS[rng.choice(3, p=_GENDER_WEIGHTS)],
                                  region=str(rng.choice(_REGIONS)), education=str(rng.choice(_EDUCATION))),
        mental_health=MentalHealthBackground(
            conditions=tuple(sorted(str(c) for c in conditions)),
            therapy_experience=("none", "past", "current")[rng.choice(3, p=[0.4, 0.4, 0.2])]),
        technology_experience=("low", "medium", "high")[rng.choice(3, p=[0.2, 0.5, 0.3])],
        ai_attitude=_AI_ATTITUDES[attitude_index],
        importance=importance,
        appropriate_uses=tuple(sorted(str(use) for use in uses)),
    )


def synthetic_personas(n: int, seed: int = 0) -> list[Persona]:
    """`n` distinct personas; the same (n, seed) always gives the same list, and a larger n extends
    a smaller one (persona i depends only on seed and i)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    personas: dict[str, Persona] = {}
    draw = 0
    while len(personas) < n:
        persona = _sample_persona(np.random.default_rng([seed, draw]))
        personas.setdefault(persona.id, persona)
        draw += 1
    return list(personas.values())


# ---------------------------------------------------------------------------------------------
# Train/test split of personas, stratified.


class PersonaSplit(NamedTuple):
    train: list[Persona]
    test: list[Persona]


def _attribute(persona: Persona, dotted: str) -> str:
    value: Any = persona
    for part in dotted.split("."):
        if not hasattr(value, part):
            raise ValueError(f"persona has no attribute '{dotted}'")
        value = getattr(value, part)
    return str(value)


def split_personas(personas: Sequence[Persona], test_fraction: float = 0.2, seed: int = 0,
                   stratify_by: Sequence[str] = ("demographics.age_band", "ai_attitude")) -> PersonaSplit:
    """Hold out round(test_fraction * n) personas with each stratum's share as close as possible.

    Strata are the combinations of the `stratify_by` attributes (dotted paths). Each stratum gives
    floor(fraction * size) personas; the remaining test places go to the strata with the largest
    remainders (ties in a seeded random order). Members are chosen by a seeded shuffle of the
    persona ids, so the split depends on the personas, not on their order in the input.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    ids = [persona.id for persona in personas]
    if len(set(ids)) != len(ids):
        raise ValueError("persona ids are not unique")
    rng = np.random.default_rng(seed)
    strata: dict[tuple[str, ...], list[Persona]] = {}
    for persona in sorted(personas, key=lambda p: p.id):
        strata.setdefault(tuple(_attribute(persona, key) for key in stratify_by), []).append(persona)
    keys = sorted(strata)
    quotas = {key: test_fraction * len(strata[key]) for key in keys}
    counts = {key: math.floor(quotas[key]) for key in keys}
    leftover = round(test_fraction * len(personas)) - sum(counts.values())
    tiebreak = dict(zip(keys, rng.permutation(len(keys)), strict=True))
    for key in sorted(keys, key=lambda k: (-(quotas[k] - counts[k]), tiebreak[k]))[:max(0, leftover)]:
        counts[key] += 1
    test_ids: set[str] = set()
    for key in keys:
        members = strata[key]
        test_ids.update(members[index].id for index in rng.permutation(len(members))[:counts[key]])
    return PersonaSplit(train=[p for p in personas if p.id not in test_ids],
                        test=[p for p in personas if p.id in test_ids])


__all__ = [
    "CRITERIA",
    "Demographics",
    "MentalHealthBackground",
    "Persona",
    "PersonaSplit",
    "SurveyMapping",
    "persona_id",
    "personas_from_survey",
    "render_persona_prompt",
    "split_personas",
    "synthetic_personas",
]
