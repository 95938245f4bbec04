"""The command tree, and that starting the CLI does not pull in the heavy optional libraries."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from theraloop.cli import app

COMMANDS = ["info", "judge", "validate", "refine", "generate", "prefs", "reward", "train", "align", "arena",
            "report", "review"]


def test_help_lists_every_command():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    listed = result.output.split("Commands:")[1]
    for command in COMMANDS:
        assert f"  {command} " in listed, command


def test_cli_starts_without_torch_transformers_or_servers():
    """A user who only judges installs neither torch nor FastAPI: the CLI must not import them."""
    code = ("import sys, theraloop.cli; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft', 'trl', 'fastapi', 'llama_cpp') "
            "if m in sys.modules))")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"
