"""The HTML report: sections from an arena run, a validation file and a refine run, checked in Chromium.

The browser test needs the system Chromium at /usr/bin/chromium; without it it skips, unless
THERALOOP_REQUIRE_BROWSER=1 (CI), where it fails.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from theraloop.arena import ArenaConfig, ArenaResult, arena_to_dir
from theraloop.io import InputError
from theraloop.llm import ChatRequest, ScriptedChatModel, run_sync
from theraloop.report import (
    build_report,
    numeric_tables,
    render_report,
    significance_matrix,
    win_rate_matrix,
    word_diff,
)
from theraloop.report._cli import register

CHROMIUM = Path("/usr/bin/chromium")
EVIL = '<img src=x onerror="window.pwned = 1">'
QUESTIONS = {f"q{i}": f"Help-seeker post number {i}." for i in range(6)}
# Quality rises with length; the script below prefers the longer response on empathy and the
# shorter on safety, so the safety-vs-empathy scatter has systems in different corners.
SYSTEMS = {"terse": "Ok.", "plain": "That sounds hard.", f"warm {EVIL}": "That sounds really hard; I am here with you."}
VALIDATION = {
    "judge": "llm:scripted",
    "n_items": 40,
    "dimensions": {
        "empathy": {"icc": 0.61, "spearman": 0.52, "kappa": {"cohen": 0.4, "weighted": 0.55}, "n": 40},
        "safety": {"icc": 0.7, "spearman": None, "kappa": {"cohen": 0.3, "weighted": 0.25}, "n": 38},
    },
}
REFINED = [
    {"id": "r1", "context": "c", "original": "Ok. Join a club.", "response": "It sounds lonely. Join a club if you like."},
    {"id": "r2", "context": "c", "original": "Fine as it is.", "response": "Fine as it is."},
    {"id": f"r3 {EVIL}", "context": "c", "original": "Hi <b>there</b>.", "response": f"Hi there. {EVIL}"},
]


def _script(request: ChatRequest) -> str:
    prompt = request.messages[-1].content
    first = prompt.split("## Response A\n", 1)[1].split("\n\n## Response B\n", 1)[0]
    second = prompt.split("## Response B\n", 1)[1].split("\n\n## Criteria", 1)[0]
    longer, shorter = ("A", "B") if len(first) > len(second) else ("B", "A")
    return json.dumps({"empathy": longer, "safety": shorter, "overall": "tie"})


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("report-inputs")
    paths = []
    for name, response in SYSTEMS.items():
        path = root / f"system-{len(paths)}.jsonl"
        path.write_text("".join(json.dumps({"id": qid, "context": context, "response": response, "system": name})
                                + "\n" for qid, context in QUESTIONS.items()))
        paths.append(path)
    personas = root / "personas.jsonl"
    personas.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"You are persona {i}."}) + "\n"
                                for i in range(2)))
    arena = root / "arena-run"
    run_sync(arena_to_dir(paths, personas, arena, ArenaConfig(n_boot=200), llm=ScriptedChatModel(_script),
                          progress=False))
    validation = root / "validation.json"
    validation.write_text(json.dumps(VALIDATION))
    refine = root / "refine-run"
    refine.mkdir()
    (refine / "refined.jsonl").write_text("".join(json.dumps(record) + "\n" for record in REFINED))
    return {"arena": arena, "validation": validation, "refine": refine}


def test_word_diff_marks_removed_and_added_words():
    segments = [(s.op, s.text) for s in word_diff("Ok. Join a  club now.", "It sounds lonely. Join a club.")]
    assert segments == [("delete", "Ok."), ("insert", "It sounds lonely."), ("equal", "Join a"),
                        ("delete", "club now."), ("insert", "club.")]
    assert [(s.op, s.text) for s in word_diff("same words", "same\nwords")] == [("equal", "same words")]


def test_numeric_tables_find_per_dimension_statistics():
    summary, dimensions = numeric_tables(VALIDATION, "summary")
    assert summary.columns == ["value"] and summary.rows == [("n_items", [40])]
    assert dimensions.title == "summary / dimensions"
    assert dimensions.columns == ["empathy", "safety"]
    assert dimensions.rows == [("icc", [0.61, 0.7]), ("spearman", [0.52, None]), ("kappa.cohen", [0.4, 0.3]),
                               ("kappa.weighted", [0.55, 0.25]), ("n", [40, 38])]
    # Many objects with few fields: a row each.
    (wide,) = numeric_tables({"a": {"x": 1}, "b": {"x": 2, "y": 2.5}, "c": {"x": 3}}, "t")
    assert wide.columns == ["x", "y"] and wide.rows == [("a", [1, None]), ("b", [2, 2.5]), ("c", [3, None])]
    # Siblings without a shared field are tabulated one by one.
    tables = numeric_tables({"a": {"x": 1}, "b": {"y": 2.5}}, "t")
    assert [(t.title, t.rows) for t in tables] == [("t / a", [("x", [1])]), ("t / b", [("y", [2.5])])]


def test_matrices_hold_the_arena_rates_and_holm_p_values(runs):
    result = ArenaResult.model_validate_json((runs["arena"] / "arena.json").read_text())
    names = result.systems
    wins = win_rate_matrix(result, "empathy")
    assert np.isnan(np.diag(wins)).all()
    for row, col in [(0, 1), (1, 0), (0, 2), (2, 1)]:
        assert wins[row, col] == result.win_rates["empathy"][names[row]][names[col]]
    assert wins[2, 0] == 1.0 and wins[0, 2] == 0.0, "the longest response wins empathy"
    p = significance_matrix(result, "safety")
    np.testing.assert_array_equal(p, p.T)
    assert p[0, 1] == result.pair(names[0], names[1]).criteria["safety"].midp_p_holm
    assert np.isnan(significance_matrix(result, "overall")).all(), "all ties: no test, no p-value"


def test_sections_are_optional_and_inputs_are_checked(runs, tmp_path):
    only_validation = render_report(build_report(validation=[runs["validation"]]))
    assert "Judge-human agreement" in only_validation and "<img" not in only_validation
    assert "Arena:" not in only_validation and "Refinement:" not in only_validation
    with pytest.raises(InputError, match="no arena.json"):
        build_report([tmp_path])
    bad = tmp_path / "bad-refine"
    bad.mkdir()
    (bad / "trace.jsonl").write_text(json.dumps({"id": "x", "original": "a"}) + "\n")
    with pytest.raises(InputError, match=r"trace.jsonl:1: field 'final'"):
        build_report(refine=[bad])


def test_user_text_is_escaped(runs):
    html = render_report(build_report([runs["arena"], runs["refine"]], [runs["validation"]]))
    assert EVIL not in html
    assert html.count(EVIL.replace("<", "&lt;").replace(">", "&gt;").replace('"', "&#34;")) >= 3


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


@pytest.mark.browser
def test_report_renders_in_chromium_with_embedded_figures(runs, tmp_path):
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} not found (apt-get install chromium)"
        if os.environ.get("THERALOOP_REQUIRE_BROWSER") == "1":
            pytest.fail(reason + " and THERALOOP_REQUIRE_BROWSER=1")
        pytest.skip(reason)
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # two commands, so `report` is addressed by name
    out = tmp_path / "site" / "report.html"
    outcome = CliRunner().invoke(app, ["report", str(runs["arena"]), str(runs["refine"]), "--validation",
                                       str(runs["validation"]), "--out", str(out)])
    assert outcome.exit_code == 0, outcome.output
    pngs = sorted(path.name for path in out.parent.glob("*.png"))
    # 3 win-rate + 3 significance matrices + the safety-vs-empathy scatter.
    assert len(pngs) == 7 and "report-safety-vs-empathy.png" in pngs

    dom = _chromium("--dump-dom", out.as_uri(), profile=tmp_path / "profile").stdout
    sources = re.findall(r'<img src="data:image/png;base64,([^"]+)"', dom)
    assert len(sources) == 7
    for source in sources:
        image = Image.open(io.BytesIO(base64.b64decode(source)))
        image.verify()
        assert image.format == "PNG" and image.width > 100 and image.height > 100
    assert "<del>Ok.</del>" in dom and "<ins>It sounds lonely.</ins>" in dom
    assert dom.count("<img") == 7, "the injected <img> stayed text: only the figures are elements"
    assert dom.count(EVIL.replace("<", "&lt;").replace(">", "&gt;")) >= 3

    shot = tmp_path / "shot.png"
    _chromium(f"--screenshot={shot}", "--window-size=1200,2000", out.as_uri(), profile=tmp_path / "profile")
    screenshot = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert screenshot.shape == (2000, 1200)
    assert screenshot.std() > 10 and not math.isclose(screenshot.min(), screenshot.max()), "the page drew something"
