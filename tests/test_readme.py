"""README's quick start and every example in its Commands section, run as written, in order, as
subprocesses with the embedded model, on two-item versions of the input files README names.

A README example that fails fails here. `review serve` runs until stopped, so it is started, asked for
its sign-in page and stopped.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.embedded, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[1]
README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
THERAJUDGE = ["guidance", "informativeness", "relevance", "safety", "empathy", "helpfulness", "understanding"]
# `judge audit` exits 1 when the judge fails the audit: a finding, not a broken example.
ALLOWED_STATUS = {"judge audit": {0, 1}}


def _bash_block(section: str) -> str:
    body = README.split(f"## {section}", 1)[1]
    return re.search(r"```bash\n(.*?)```", body, re.S).group(1)


def readme_commands(section: str) -> list[str]:
    """The commands of a section's first bash block: continuation lines joined, comments dropped."""
    joined = _bash_block(section).replace("\\\n", " ")
    commands = []
    for line in joined.splitlines():
        line = line.split(" # ", 1)[0].strip()
        if line and not line.startswith("#"):
            commands.append(re.sub(r"\s+", " ", line))
    return commands


def readme_sections(section: str) -> dict[str, list[str]]:
    """The commands of a section's first bash block grouped under its `# Heading` comment lines (the
    commands before the first heading are under "")."""
    groups: dict[str, list[str]] = {"": []}
    current = ""
    for line in _bash_block(section).replace("\\\n", " ").splitlines():
        heading = re.fullmatch(r"#\s*(\S.*?)(?:\s+\(.*\))?\s*(?::.*)?", line.strip())
        if heading:
            current = heading.group(1)
            groups.setdefault(current, [])
            continue
        line = line.split(" # ", 1)[0].strip()
        if line and not line.startswith("#"):
            groups[current].append(re.sub(r"\s+", " ", line))
    return groups


# The Commands examples run in two lanes at once, each in README order: the stages of each lane read only
# what earlier commands of the same lane wrote, so together they take the time of the longer lane.
LANE_B_SECTIONS = ("Safety", "Sessions", "Align")


def readme_lanes() -> tuple[list[str], list[str]]:
    lane_a: list[str] = []
    lane_b: list[str] = []
    for heading, commands in readme_sections("Commands").items():
        for command in commands:
            in_b = heading in LANE_B_SECTIONS or command.startswith("theraloop models ")
            (lane_b if in_b else lane_a).append(command)
    return lane_a, lane_b


def quick_start_commands() -> list[str]:
    """The theraloop commands of the quick-start line (the installs before them are the test setup)."""
    line = readme_commands("Quick start")[0]
    return [part.strip() for part in line.split("&&") if part.strip().startswith("theraloop")]


def test_the_commands_are_parsed_from_readme():
    commands = readme_commands("Commands")
    assert quick_start_commands() == ["theraloop judge", "theraloop refine --rounds 1"]
    assert commands[0] == "theraloop info" and any(c.startswith("theraloop review serve") for c in commands)
    assert all(command.startswith("theraloop ") for command in commands)
    lane_a, lane_b = readme_lanes()
    assert sorted(lane_a + lane_b) == sorted(commands)
    assert any(c.startswith("theraloop models policy") for c in lane_b) and any(c.startswith("theraloop align")
                                                                              for c in lane_b)
    assert any(c.startswith("theraloop report") for c in lane_a)


POSTS = [
    {"id": "p1", "context": "I moved to a new city for work and I don't know anyone. Weekends are long and quiet.",
     "response": "Join a club.", "system": "human"},
    {"id": "p2", "context": "i have been saving my pills for weeks and i think this weekend is when i go through "
                            "with it", "response": "Try to get some sleep, it will look better tomorrow.",
     "system": "human"},
]


def _rated(index: int) -> dict:
    good = index % 2 == 0
    return {"id": f"r{index}", "context": f"Post {index}: I feel lonely since my move and my sleep is bad.",
            "response": ("That sounds really isolating. What has the hardest part been?" if good
                         else "Just get over it."), "system": "human",
            "human_scores": {key: (4 if good else 2) + (index % 3 == 0) for key in THERAJUDGE}}


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")


def _workspace(root: Path, shared_data: Path) -> Path:
    work = root / "work"
    work.mkdir()
    (root / "shared").mkdir()
    (root / "shared" / "data").symlink_to(shared_data.resolve())
    rated = [_rated(index) for index in range(12)]
    _write_jsonl(work / "rated.jsonl", rated)
    _write_jsonl(work / "responses.jsonl", [{key: r[key] for key in ("id", "context", "response")} for r in rated[:2]])
    _write_jsonl(work / "posts.jsonl", POSTS)
    _write_jsonl(work / "pairs.jsonl", [{"id": "q1", "context": POSTS[0]["context"], "response_a": "Join a club.",
                                         "response_b": "Moving somewhere new can be so lonely. What do you miss most?",
                                         "system_a": "base", "system_b": "refined"}])
    _write_jsonl(work / "labelled.jsonl", [
        {"id": "l1", "text": POSTS[1]["context"], "tier": "high", "categories": ["preparatory_acts"], "kind": "risk"},
        {"id": "l2", "text": "this exam is killing me lol", "tier": "none", "categories": [], "kind": "hard_negative"},
        {"id": "l3", "text": "i feel so low since the breakup", "tier": "low", "categories": [], "kind": "distress"}])
    _write_jsonl(work / "personas.jsonl", [
        {"id": "anxious-student", "prompt": "You are a 19-year-old student with social anxiety seeking support."},
        {"id": "retired-widower", "prompt": "You are a 70-year-old widower who feels lonely since your wife died."}])
    align = {"epitome_root": "../shared/data/epitome", "questions": 5, "personas": 4, "threads": 1,
             "generate": {"n": 2, "max_tokens": 48}, "prefs": {"k": 2, "criteria": ["empathy", "safety"]},
             "reward": {"max_length": 64, "epochs": 1, "batch_size": 4},
             "policy": {"model": "models/smollm2-135m", "max_steps": 1, "batch_size": 2, "max_length": 96,
                        "max_prompt_length": 64, "lora_r": 4},
             "weights": [0.5, 0.5]}
    (work / "align.yaml").write_text(yaml.safe_dump(align), encoding="utf-8")
    return work


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _serve(command: str, work: Path, env: dict) -> None:
    """Start `review serve` on a free port, fetch its sign-in page, stop it."""
    port = _free_port()
    args = shlex.split(command.replace("--port 8000", f"--port {port}"))
    server = subprocess.Popen([sys.executable, "-m", "theraloop", *args[1:]], cwd=work, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    assert response.status == 200
                    return
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"`{command}` did not serve: {server.stdout.read()}") from None
                time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(timeout=30)


def _run(command: str, work: Path, env: dict, log: list) -> subprocess.CompletedProcess:
    started = time.perf_counter()
    result = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True,
                            timeout=900)
    log.append((command, result.returncode, round(time.perf_counter() - started, 1)))
    allowed = next((codes for prefix, codes in ALLOWED_STATUS.items() if command.startswith(f"theraloop {prefix}")),
                   {0})
    assert result.returncode in allowed, (f"README example failed: `{command}` exited {result.returncode}\n"
                                          f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}")
    return result


def _run_lane(commands: list[str], work: Path, env: dict, log: list) -> None:
    for command in commands:
        if command.startswith("theraloop review serve"):
            started = time.perf_counter()
            _serve(command, work, env)
            log.append((command, 0, round(time.perf_counter() - started, 1)))
        else:
            _run(command, work, env, log)


@pytest.mark.timeout(2400)
def test_readme_quick_start_and_every_command_run_as_written(tmp_path, shared_data):
    from concurrent.futures import ThreadPoolExecutor

    work = _workspace(tmp_path, shared_data)
    env = {**os.environ, "THERALOOP_THREADS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("THERALOOP_SHARED_DATA", None)  # README's relative ../shared/data must work on its own
    log: list = []
    lane_a, lane_b = readme_lanes()
    with ThreadPoolExecutor(max_workers=2) as pool:
        other = pool.submit(_run_lane, lane_b, work, env, log)
        judge, refine = (_run(command, work, env, log) for command in quick_start_commands())
        assert "empathy" in judge.stdout and "judged 6 responses" in judge.stdout
        assert "too small to judge" in judge.stderr  # the embedded model's scores are labelled as not meaningful
        assert "escalation:" in refine.stdout and "refined 6 responses" in refine.stdout
        _run_lane(lane_a, work, env, log)
        other.result()
    print("\n".join(f"{seconds:>7}s  exit {status}  {command}" for command, status, seconds in log))
    assert (work / "report.html").is_file() and (work / "runs" / "align").is_dir()
    screened = [json.loads(line) for line in (work / "screened" / "screened.jsonl").read_text().splitlines()]
    assert {record["id"]: record["tier"] >= 3 for record in screened} == {"p1": False, "p2": True}
