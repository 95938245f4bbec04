"""CPU facts the embedded llama.cpp backend depends on: AMX, and how many threads to use.

llama.cpp repacks weights into "extra buffer types" for faster CPU matmuls. On CPUs with AMX
(Intel Sapphire Rapids and later) its AMX buffer type segfaults on the first matmul of a multi-token
batch (upstream llama.cpp issue 20824), so there the extra buffer types are turned off; elsewhere
repacking is safe and kept.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ExtraBuffers = Literal["auto", "on", "off"]
EXTRA_BUFFERS_ENV = "THERALOOP_LLAMA_EXTRA_BUFFERS"
THREADS_ENV = "THERALOOP_THREADS"
AMX_FLAGS = ("amx_tile", "amx_int8", "amx_bf16")


def cpu_flags(cpuinfo: str | None = None) -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo text, or None where they cannot be read."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return None


@dataclass(frozen=True)
class ExtraBuffersDecision:
    enabled: bool
    reason: str


def decide_extra_buffers(setting: ExtraBuffers | None = None, flags: set[str] | None = None,
                         platform: str = sys.platform) -> ExtraBuffersDecision:
    """Whether llama.cpp may use its extra (repacking) buffer types, and why.

    Precedence: the setting (config or flag), then the environment variable, then detection. Detection
    turns them off on AMX CPUs and where the CPU flags cannot be read (safe, a little slower).
    """
    if setting in ("on", "off"):
        return ExtraBuffersDecision(setting == "on", f"forced {setting} by the config (llm.extra_buffers)")
    forced = os.environ.get(EXTRA_BUFFERS_ENV, "").strip().lower()
    if forced not in ("", "auto", "on", "off"):
        raise ValueError(f"{EXTRA_BUFFERS_ENV}={forced!r}: use auto, on or off")
    if forced in ("on", "off"):
        return ExtraBuffersDecision(forced == "on", f"forced {forced} by {EXTRA_BUFFERS_ENV}")
    if flags is None:
        flags = cpu_flags()
    if flags is None:
        if platform == "darwin":
            return ExtraBuffersDecision(True, "macOS: no AMX CPUs, repacking kept")
        return ExtraBuffersDecision(False, "CPU flags unreadable: AMX cannot be ruled out, repacking off")
    amx = sorted(flags.intersection(AMX_FLAGS))
    if amx:
        return ExtraBuffersDecision(False, f"AMX CPU ({', '.join(amx)}): llama.cpp's AMX path crashes, repacking off")
    return ExtraBuffersDecision(True, "no AMX on this CPU: repacking kept")


def default_threads(cores: int | None = None) -> int:
    """Half the cores (at least one). llama.cpp's threads spin-wait on each other, so a thread that
    shares a core with any other busy process stalls every token: on 2 cores with one busy, 2 threads
    gave 0.3 tok/s against 11 for 1 thread, while on an idle machine 2 threads gain only ~20%
    (bench/llm_speed.py)."""
    cores = cores or os.cpu_count() or 1
    return max(1, cores // 2)


def resolve_threads(configured: int | None = None) -> int:
    """The flag or config, then the environment variable, then default_threads()."""
    if configured:
        return configured
    raw = os.environ.get(THREADS_ENV, "").strip()
    if raw:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"{THREADS_ENV}={raw!r}: expected a positive integer") from None
        if value < 1:
            raise ValueError(f"{THREADS_ENV}={raw!r}: expected a positive integer")
        return value
    return default_threads()
