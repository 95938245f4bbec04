"""Run the CLI in a child process so that a crash in native code (llama.cpp, torch) reaches the user
as an explanation, not a bare "Segmentation fault".

The child notes what native work it is doing (backend, model, settings) in a file the parent reads
only if the child dies from a signal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

SUPERVISED_ENV = "THERALOOP_SUPERVISED"
CRASH_NOTE_ENV = "THERALOOP_CRASH_NOTE"
NO_SUPERVISOR_ENV = "THERALOOP_NO_SUPERVISOR"
_CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGABRT, signal.SIGFPE}

CRASH_ADVICE = """What to try:
  - llama.cpp on a CPU with AMX (Intel Sapphire Rapids and later) crashes when it repacks weights:
    THERALOOP_LLAMA_EXTRA_BUFFERS=off (or `llm: {extra_buffers: "off"}` in --config) turns repacking off;
    `theraloop info` shows what theraloop detected.
  - fewer threads: --threads 1 (or THERALOOP_THREADS=1).
  - a portable build of llama-cpp-python: CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
    pip install --force-reinstall --no-cache-dir llama-cpp-python
  - another backend: --base-url URL --model NAME (vLLM, Ollama, llama.cpp server), or --backend transformers."""


def note_native_context(text: str) -> None:
    """Record what native work the process is about to do, for the supervisor's crash message."""
    path = os.environ.get(CRASH_NOTE_ENV)
    if not path:
        return
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(text.replace("\n", " ") + "\n")
    except OSError:
        pass


def crash_message(signum: int, notes: list[str]) -> str:
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    doing = ("\n".join(f"  - {note}" for note in notes) if notes
             else "  (no model had been loaded; the crash is in a library theraloop imported)")
    return (f"error: theraloop crashed in native code ({name}, signal {signum}). It was running:\n{doing}\n"
            f"{CRASH_ADVICE}")


def run_supervised(command: list[str]) -> int:
    """Run `command` (a theraloop CLI invocation) as a child; return its exit status, explaining crashes."""
    with tempfile.TemporaryDirectory(prefix="theraloop-") as folder:
        note = Path(folder) / "native.txt"
        env = {**os.environ, SUPERVISED_ENV: "1", CRASH_NOTE_ENV: str(note)}
        child = subprocess.Popen(command, env=env)
        # Ctrl-C reaches the child through the terminal; the parent only waits for it to finish.
        previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        previous_term = signal.signal(signal.SIGTERM, lambda signum, frame: child.send_signal(signum))
        try:
            status = child.wait()
        finally:
            signal.signal(signal.SIGINT, previous_int)
            signal.signal(signal.SIGTERM, previous_term)
        if status >= 0:
            return status
        signum = -status
        if signum in _CRASH_SIGNALS:
            notes = note.read_text(encoding="utf-8").splitlines() if note.exists() else []
            print(crash_message(signum, notes), file=sys.stderr)
        return 128 + signum


def should_supervise() -> bool:
    return (os.environ.get(SUPERVISED_ENV) != "1" and not os.environ.get(NO_SUPERVISOR_ENV)
            and os.name == "posix")
