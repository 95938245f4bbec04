"""Personas: content ids, the role-play prompt, survey mapping (and its errors), sampling, stratified split."""

from __future__ import annotations

import csv
import random
from collections import Counter
from importlib import resources
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from theraloop.data._personas import (
    CRITERIA,
    Persona,
    persona_id,
    personas_from_survey,
    render_persona_prompt,
    split_personas,
    synthetic_personas,
)
from theraloop.io import InputError
from theraloop.rubrics import load_rubric

MAPPING = Path(str(resources.files("theraloop.data") / "personas_survey_mapping.yaml"))
HEADER = ["Respondent", "Q1 Age", "Q2 Gender", "Q3 Country", "Q4 Highest education", "Q5 Conditions (select all)",
          "Q6 Therapy", "Q7 Technology use", "Q8 AI in mental health", "Q9_1 Empathy", "Q9_2 Active listening",
          "Q9_3 Self-motivated change", "Q9_4 Trust and rapport", "Q9_5 Patient autonomy", "Q9_6 Safety",
          "Q9_7 Overall", "Q10 Appropriate uses (select all)"]
ROW_A = ["r1", "25-34", "Female", "Ireland", "bachelor's degree", "depression; generalised anxiety", "Yes, in the past",
         "Advanced", "Somewhat positive", "5", "4", "3", "4", "5", "5", "4", "coping strategies;journaling"]
ROW_B = ["r2", "65+", "Male", "Canada", "secondary school", "", "Never", "Beginner", "Strongly negative",
         "3", "3", "2", "5", "4", "5", "3", ""]


def write_survey(path: Path, rows: list[list[str]], header: list[str] = HEADER) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_criteria_are_the_modpo_rubric_dimensions():
    assert list(CRITERIA) == load_rubric("modpo").keys
    assert CRITERIA == ("empathy", "active_listening", "self_motivated_change", "trust_rapport", "patient_autonomy",
                        "safety", "overall")


def test_ids_are_content_hashes_independent_of_key_order_and_sensitive_to_content():
    persona = synthetic_personas(1, seed=3)[0]
    data = persona.model_dump(mode="json", exclude={"id"})
    reordered = {**data, "importance": dict(reversed(list(data["importance"].items())))}
    assert Persona.model_validate(reordered).id == persona.id == persona_id(persona)
    assert persona.id.startswith("p-") and len(persona.id) == 14
    changed = {**data, "importance": {**data["importance"], "safety": 6 - data["importance"]["safety"] or 1}}
    assert Persona.model_validate(changed).id != persona.id
    assert Persona.model_validate({**data, "id": "mine"}).id == "mine", "a given id is kept"


def test_a_persona_must_rate_every_criterion_within_1_to_5():
    data = synthetic_personas(1)[0].model_dump(mode="json", exclude={"id"})
    missing = {**data, "importance": {k: v for k, v in data["importance"].items() if k != "safety"}}
    with pytest.raises(ValidationError, match="missing safety"):
        Persona.model_validate(missing)
    with pytest.raises(ValidationError, match="less than or equal to 5"):
        Persona.model_validate({**data, "importance": {**data["importance"], "empathy": 7}})
    with pytest.raises(ValidationError, match="unknown kindness"):
        Persona.model_validate({**data, "importance": {**data["importance"], "kindness": 3}})


def test_synthetic_sampling_is_seeded_and_a_larger_n_extends_a_smaller_one():
    first, again = synthetic_personas(30, seed=7), synthetic_personas(30, seed=7)
    assert first == again
    assert synthetic_personas(12, seed=7) == first[:12]
    assert [p.id for p in synthetic_personas(30, seed=8)] != [p.id for p in first]
    assert len({p.id for p in first}) == 30
    # Importance leans high, as the survey found; safety highest on average.
    means = {key: sum(p.importance[key] for p in first) / 30 for key in CRITERIA}
    assert max(means, key=means.get) == "safety" and min(means.values()) >= 3


def test_render_persona_prompt_orders_priorities_and_states_the_profile():
    persona = Persona.model_validate({
        "demographics": {"age_band": "18-24", "gender": "woman", "region": "Nigeria", "education": "secondary school"},
        "mental_health": {"conditions": ["social anxiety"], "therapy_experience": "current"},
        "technology_experience": "high", "ai_attitude": "very positive",
        "importance": {"empathy": 2, "active_listening": 3, "self_motivated_change": 1, "trust_rapport": 4,
                       "patient_autonomy": 5, "safety": 4, "overall": 3},
        "appropriate_uses": ["a first place to talk when feeling low"],
    })
    prompt = render_persona_prompt(persona)
    for fact in ("18-24", "Nigeria", "social anxiety", "are in therapy at the moment", "very positive",
                 "a first place to talk when feeling low", "not by what a clinician would say"):
        assert fact in prompt
    order = [prompt.index(name) for name in ("Patient autonomy: essential", "Trust and rapport", "Safety",
                                             "Active listening", "Overall preference", "Empathy: matters a little",
                                             "Self-motivated change: barely matters")]
    assert order == sorted(order), "most important first; ties in rubric order"


def test_personas_from_survey_with_the_example_mapping(tmp_path):
    survey = write_survey(tmp_path / "survey.csv", [ROW_A, ROW_B, ROW_A])
    personas = personas_from_survey(survey, MAPPING)
    assert len(personas) == 2, "identical respondents are one persona"
    first, second = personas
    assert first.demographics.gender == "woman" and first.demographics.age_band == "25-34"
    assert first.mental_health.conditions == ("depression", "generalised anxiety")
    assert first.mental_health.therapy_experience == "past" and first.technology_experience == "high"
    assert first.ai_attitude == "positive" and first.appropriate_uses == ("coping strategies", "journaling")
    assert first.importance == {"empathy": 5, "active_listening": 4, "self_motivated_change": 3, "trust_rapport": 4,
                                "patient_autonomy": 5, "safety": 5, "overall": 4}
    assert second.mental_health.conditions == () and second.appropriate_uses == ()
    assert second.ai_attitude == "very negative"
    assert personas_from_survey(survey, MAPPING) == personas, "ids and content are reproducible"


def test_a_mapped_column_missing_from_the_csv_is_named(tmp_path):
    header = [name if name != "Q9_6 Safety" else "Q9_6 Safty" for name in HEADER]
    survey = write_survey(tmp_path / "survey.csv", [ROW_A], header)
    with pytest.raises(InputError, match=r"field 'importance\.safety': column 'Q9_6 Safety' is not in .*survey\.csv"):
        personas_from_survey(survey, MAPPING)


def test_unmapped_answers_and_bad_values_name_the_row_and_column(tmp_path):
    unknown_answer = [*ROW_A[:6], "Sometimes", *ROW_A[7:]]
    with pytest.raises(InputError, match=r"survey\.csv:3: column 'Q6 Therapy': answer 'Sometimes'"):
        personas_from_survey(write_survey(tmp_path / "survey.csv", [ROW_A, unknown_answer]), MAPPING)
    out_of_range = [*ROW_A[:9], "9", *ROW_A[10:]]
    with pytest.raises(InputError, match=r":2: column 'Q9_1 Empathy' \(persona field 'importance.empathy'\)"):
        personas_from_survey(write_survey(tmp_path / "range.csv", [out_of_range]), MAPPING)
    bad_age = ["r3", "40ish", *ROW_A[2:]]
    with pytest.raises(InputError, match=r":2: column 'Q1 Age' \(persona field 'demographics.age_band'\)"):
        personas_from_survey(write_survey(tmp_path / "age.csv", [bad_age]), MAPPING)
    empty_required = [*ROW_A[:3], "", *ROW_A[4:]]
    with pytest.raises(InputError, match=r":2: column 'Q3 Country': empty answer"):
        personas_from_survey(write_survey(tmp_path / "empty.csv", [empty_required]), MAPPING)


def test_a_mapping_with_an_unknown_field_is_rejected(tmp_path):
    mapping = yaml.safe_load(MAPPING.read_text(encoding="utf-8"))
    mapping["demographics"]["shoe_size"] = "Q0"
    bad = tmp_path / "mapping.yaml"
    bad.write_text(yaml.safe_dump(mapping), encoding="utf-8")
    with pytest.raises(InputError, match=r"mapping\.yaml: 'demographics\.shoe_size"):
        personas_from_survey(write_survey(tmp_path / "survey.csv", [ROW_A]), bad)


def test_split_is_stratified_seeded_and_independent_of_input_order():
    personas = synthetic_personas(60, seed=1)
    split = split_personas(personas, test_fraction=0.25, seed=5, stratify_by=["ai_attitude"])
    assert len(split.test) == 15 and len(split.train) == 45
    assert {p.id for p in split.test}.isdisjoint({p.id for p in split.train})
    sizes = Counter(p.ai_attitude for p in personas)
    held = Counter(p.ai_attitude for p in split.test)
    for stratum, size in sizes.items():
        assert int(0.25 * size) <= held[stratum] <= int(0.25 * size) + 1, stratum
    shuffled = personas[:]
    random.Random(0).shuffle(shuffled)
    again = split_personas(shuffled, test_fraction=0.25, seed=5, stratify_by=["ai_attitude"])
    assert {p.id for p in again.test} == {p.id for p in split.test}
    assert {p.id for p in split_personas(personas, 0.25, seed=6, stratify_by=["ai_attitude"]).test} != \
        {p.id for p in split.test}


def test_split_gives_leftover_places_to_the_largest_remainders():
    # Strata of 10, 6 and 4 at 25%: quotas 2.5, 1.5, 1.0 -> floors 2, 1, 1; one place left for 5 in total,
    # which goes to a stratum with remainder 0.5 (the first or the second), never to the third.
    base = synthetic_personas(20, seed=2)
    bands = ["18-24"] * 10 + ["25-34"] * 6 + ["35-44"] * 4
    personas = [Persona.model_validate({**p.model_dump(mode="json", exclude={"id"}),
                                        "demographics": {**p.demographics.model_dump(), "age_band": band}})
                for p, band in zip(base, bands, strict=True)]
    for seed in range(6):
        held = Counter(p.demographics.age_band for p in split_personas(personas, 0.25, seed,
                                                                      ["demographics.age_band"]).test)
        assert sum(held.values()) == 5 and held["35-44"] == 1
        assert sorted([held["18-24"], held["25-34"]]) in ([2, 2], [1, 3]) and held["18-24"] in (2, 3)


def test_split_rejects_unknown_attributes_and_bad_fractions():
    personas = synthetic_personas(5)
    with pytest.raises(ValueError, match="no attribute 'demographics.shoe'"):
        split_personas(personas, 0.2, stratify_by=["demographics.shoe"])
    with pytest.raises(ValueError, match="test_fraction"):
        split_personas(personas, 1.0)
