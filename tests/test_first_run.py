"""What a new user meets first: the llama.cpp settings chosen for their CPU, a crash explained rather
than a bare segfault, a fast and complete --help, and bad input answered with one clear line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from theraloop.cli import PIPELINE_ORDER, app
from theraloop.llm._cpu import cpu_flags, decide_extra_buffers, default_threads, resolve_threads
from theraloop.supervisor import crash_message, run_supervised

SAPPHIRE_RAPIDS = "processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile amx_int8 fma\n"
EPYC = "processor\t: 0\nflags\t\t: fpu avx2 avx512f fma\n"


def test_amx_cpus_get_repacking_off_and_others_keep_it(monkeypatch):
    monkeypatch.delenv("THERALOOP_LLAMA_EXTRA_BUFFERS", raising=False)
    amx = decide_extra_buffers(flags=cpu_flags(SAPPHIRE_RAPIDS))
    assert not amx.enabled and "amx_bf16, amx_int8, amx_tile" in amx.reason
    assert decide_extra_buffers(flags=cpu_flags(EPYC)).enabled
    assert cpu_flags("no flags line here") is None
    # Unreadable flags (Windows): AMX cannot be ruled out, so the safe choice; macOS has no AMX CPUs.
    from theraloop.llm import _cpu

    monkeypatch.setattr(_cpu, "cpu_flags", lambda: None)
    assert not decide_extra_buffers(platform="win32").enabled
    assert decide_extra_buffers(platform="darwin").enabled


def test_config_and_environment_force_either_choice(monkeypatch):
    flags = cpu_flags(SAPPHIRE_RAPIDS)
    monkeypatch.setenv("THERALOOP_LLAMA_EXTRA_BUFFERS", "on")
    assert decide_extra_buffers(flags=flags).enabled
    assert not decide_extra_buffers("off", flags=cpu_flags(EPYC)).enabled  # the config wins over the environment
    monkeypatch.setenv("THERALOOP_LLAMA_EXTRA_BUFFERS", "sometimes")
    with pytest.raises(ValueError, match="use auto, on or off"):
        decide_extra_buffers(flags=flags)


def test_threads_default_to_half_the_cores_and_can_be_set(monkeypatch):
    monkeypatch.delenv("THERALOOP_THREADS", raising=False)
    assert [default_threads(cores) for cores in (1, 2, 8)] == [1, 1, 4]
    monkeypatch.setenv("THERALOOP_THREADS", "3")
    assert resolve_threads() == 3 and resolve_threads(2) == 2
    monkeypatch.setenv("THERALOOP_THREADS", "zero")
    with pytest.raises(ValueError, match="positive integer"):
        resolve_threads()


def test_info_reports_the_llama_cpp_decision(monkeypatch):
    monkeypatch.setenv("THERALOOP_LLAMA_EXTRA_BUFFERS", "off")
    monkeypatch.setenv("THERALOOP_THREADS", "1")
    result = CliRunner().invoke(app, ["info"])
    assert result.exit_code == 0
    assert "extra buffer types (weight repacking): off (forced off by THERALOOP_LLAMA_EXTRA_BUFFERS)" in result.output
    assert "llama.cpp threads: 1" in result.output


def test_a_native_crash_is_explained_with_what_was_running(tmp_path, capfd):
    crash = ("import os, signal\n"
             "from theraloop.supervisor import note_native_context\n"
             "note_native_context('llama.cpp running model.gguf, 2 thread(s), extra buffer types on')\n"
             "os.kill(os.getpid(), signal.SIGSEGV)\n")
    status = run_supervised([sys.executable, "-c", crash])
    assert status == 128 + signal.SIGSEGV
    error = capfd.readouterr().err
    assert "crashed in native code (SIGSEGV" in error
    assert "llama.cpp running model.gguf" in error and "THERALOOP_LLAMA_EXTRA_BUFFERS=off" in error
    assert run_supervised([sys.executable, "-c", "raise SystemExit(4)"]) == 4
    assert "no model had been loaded" in crash_message(signal.SIGSEGV, [])


def _theraloop(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "theraloop", *args], capture_output=True, text=True, cwd=cwd,
                          env=environment, timeout=300)


def test_help_is_fast_and_lists_commands_in_pipeline_order():
    _theraloop("--help")  # warm the bytecode cache
    started = time.perf_counter()
    result = _theraloop("--help")
    elapsed = time.perf_counter() - started
    assert result.returncode == 0
    listed = [line.split()[0] for line in result.stdout.split("Commands:")[1].splitlines() if line.strip()]
    assert listed == [name for name in PIPELINE_ORDER if name in listed]
    assert {"judge", "safety", "refine", "train", "review", "data", "models"} <= set(listed)
    # Two interpreters (the supervisor and the CLI); loose enough for a loaded CI machine.
    assert elapsed < 2.5, elapsed


def test_judge_help_shows_the_scoring_options_and_subcommands():
    result = CliRunner().invoke(app, ["judge", "--help"])
    assert result.exit_code == 0
    for option in ("--rubric", "--out", "--config", "--threads", "--engine", "--max-chars"):
        assert option in result.output, option
    assert "audit" in result.output and "calibrate" in result.output


@pytest.mark.parametrize("command", [["judge", "score"], ["refine"], ["safety", "screen"], ["safety", "eval"],
                                     ["generate"], ["prefs"], ["arena"], ["train"], ["align"], ["review", "serve"]])
def test_every_command_documents_its_options(command):
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "--help" in result.output and "Options" in result.output


def _lines(*records: dict) -> str:
    return "".join(json.dumps(record) + "\n" for record in records)


def test_bad_input_files_get_one_line_and_a_nonzero_exit(tmp_path):
    not_utf8 = tmp_path / "latin1.jsonl"
    not_utf8.write_bytes(_lines({"id": "1", "context": "ok", "response": "fine"}).encode()
                         + '{"id": "2", "context": "caf\xe9", "response": "x"}\n'.encode("latin-1"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    for path, message in ((not_utf8, "latin1.jsonl:2: not UTF-8 (byte 0xe9 at byte offset 76"),
                          (tmp_path, "is a directory"), (empty, "no records"),
                          (tmp_path / "missing.jsonl", "file not found")):
        result = _theraloop("judge", str(path), "--out", str(tmp_path / "out"))
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_over_long_items_are_cut_with_a_warning_naming_them_or_skipped(tmp_path):
    from theraloop.records import ResponseItem, fit_items

    long_post = "I keep thinking about it. " * 400 + "I have the pills counted out tonight."
    items = [ResponseItem(id="short", context="hello", response="hi"),
             ResponseItem(id="long", context=long_post, response="That sounds hard.")]
    kept, warnings = fit_items(items, max_chars=1000)
    assert [item.id for item in kept] == ["short", "long"]
    assert len(kept[1].context) <= 1000 and "characters cut" in kept[1].context
    assert kept[1].context.endswith("I have the pills counted out tonight.")  # the tail survives
    assert kept[1].meta["full_context"] == long_post  # the safety guard screens the whole post
    assert len(warnings) == 1 and "'long' truncated" in warnings[0]
    kept, warnings = fit_items(items, max_chars=1000, policy="skip")
    assert [item.id for item in kept] == ["short"] and "'long' skipped" in warnings[0]


def test_data_check_names_every_dataset_and_its_licence(tmp_path):
    result = CliRunner().invoke(app, ["data", "check", "--root", str(tmp_path)])
    assert result.exit_code == 0
    for name in ("epitome", "mentalalign", "counselchat"):
        assert f"{name}: NOT FOUND" in result.output
    assert "non-commercial academic research use" in result.output and "3 dataset(s) missing" in result.output


def test_datasets_are_found_beside_the_working_directory(tmp_path, monkeypatch, shared_data):
    from theraloop.data import find_dataset
    from theraloop.io import InputError

    monkeypatch.delenv("THERALOOP_SHARED_DATA", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(shared_data)
    monkeypatch.chdir(work)
    assert find_dataset("epitome").resolve() == (shared_data / "epitome").resolve()
    with pytest.raises(InputError, match="get it from github.com/behavioral-data"):
        find_dataset("epitome", tmp_path / "nowhere")
