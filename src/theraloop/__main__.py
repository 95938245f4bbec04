"""`theraloop` and `python -m theraloop`: the CLI, in a supervised child process (see supervisor.py)."""

from __future__ import annotations

import sys


def main() -> None:
    from theraloop.supervisor import run_supervised, should_supervise

    if should_supervise():
        sys.exit(run_supervised([sys.executable, "-m", "theraloop", *sys.argv[1:]]))
    from theraloop.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
