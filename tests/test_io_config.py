"""JSONL validation, crash-safe appends, configs with overrides, manifests."""

from __future__ import annotations

import json

import pytest
import yaml

from theraloop.config import StrictModel, load_config
from theraloop.io import InputError, JSONLAppender, check_unique_ids, read_jsonl, sha256_file, write_jsonl
from theraloop.judge import JudgeConfig
from theraloop.manifest import write_manifest
from theraloop.records import ResponseItem, bundled_examples_path


def test_bundled_examples_are_valid_items():
    items = read_jsonl(bundled_examples_path(), ResponseItem)
    assert len(items) == 6 and len({item.id for item in items}) == 6


@pytest.mark.parametrize(("line", "message"), [
    ('{"id": "a", "context": "c"', r"bad.jsonl:2: not valid JSON"),
    ('[1, 2]', r"bad.jsonl:2: expected a JSON object"),
    ('{"id": "a", "context": "c"}', r"bad.jsonl:2: field 'response': Field required"),
    ('{"id": "a", "context": "c", "response": "r", "human_scores": {"empathy": "high"}}',
     r"bad.jsonl:2: field 'human_scores.empathy'"),
])
def test_malformed_line_names_file_line_and_field(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "ok", "context": "c", "response": "r"}\n' + line + "\n")
    with pytest.raises(InputError, match=message):
        read_jsonl(path, ResponseItem)


def test_missing_file_and_duplicate_ids(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_jsonl(tmp_path / "nope.jsonl")
    items = [ResponseItem(id="x", context="c", response="r")] * 2
    with pytest.raises(InputError, match="duplicate id 'x'"):
        check_unique_ids(items, tmp_path / "f.jsonl")


def test_appender_recovers_from_a_torn_last_line(tmp_path):
    path = tmp_path / "out.jsonl"
    with JSONLAppender(path) as appender:
        appender.write({"id": "a"})
        appender.write(ResponseItem(id="b", context="c", response="r"))
    with open(path, "a") as handle:
        handle.write('{"id": "c", "par')  # a crash mid-write
    resumed = JSONLAppender(path)
    assert [record["id"] for record in resumed.existing] == ["a", "b"]
    assert resumed.done_keys() == {"a", "b"}
    resumed.write({"id": "c"})
    resumed.close()
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["a", "b", "c"]


class _Inner(StrictModel):
    model: str | None = None
    concurrency: int = 8


class _Config(StrictModel):
    rounds: int = 3
    llm: _Inner = _Inner()


def test_config_file_then_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"rounds": 5, "llm": {"model": "m"}}))
    config = load_config(_Config, path, rounds=None, **{"llm.concurrency": 2})
    assert (config.rounds, config.llm.model, config.llm.concurrency) == (5, "m", 2)


@pytest.mark.parametrize(("text", "message"), [("rounds: [1", "not valid YAML"), ("- 1\n- 2", "mapping"),
                                               ("roundz: 2", "field 'roundz': Extra inputs"),
                                               ("llm: {concurrency: many}", "field 'llm.concurrency'")])
def test_config_errors_name_the_field(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        load_config(_Config, path)


def test_manifest_records_config_inputs_versions_and_seed(tmp_path):
    data = tmp_path / "in.jsonl"
    write_jsonl(data, [ResponseItem(id="a", context="c", response="r")])
    config = JudgeConfig(seed=7)
    write_manifest(tmp_path / "run", "judge", config, inputs={"input": data, "absent": None}, seed=7)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["seed"] == 7 and manifest["inputs"]["input"]["sha256"] == sha256_file(data)
    assert "theraloop" in manifest["versions"] and "pydantic" in manifest["versions"]
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["seed"] == 7
