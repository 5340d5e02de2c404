"""Pushing a package to a model hub (``trainer.push``) and registering the pinned ref, with no
network: a hub double commits into a local Hugging Face cache, which the registry then reads through
``snapshot_download``."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import fakeredis
import pytest
import requests
from huggingface_hub import CommitInfo
from huggingface_hub.errors import HfHubHTTPError

from consumer.errors import ConfigError, IntegrityError
from consumer.package import load_package
from consumer.registry import Registry
from consumer.settings import ConsumerSettings
from trainer import cli
from trainer.errors import PublishError
from trainer.push import push_to_hub
from trainer.register import register

pytestmark = pytest.mark.train  # the tiny package is exported with torch

REPO = "bank/complaints-minilm"


class CacheHub:
    """The HfApi calls ``push_to_hub`` makes. A commit lands in a Hugging Face cache laid out as
    ``snapshot_download`` reads it: ``models--<owner>--<name>/snapshots/<commit>/`` and
    ``refs/<branch>``. ``fail`` maps a method name to the error it raises instead."""

    def __init__(self, cache: Path, fail: dict[str, Exception] | None = None) -> None:
        self.cache = cache
        self.fail = fail or {}
        self.calls: list[str] = []
        self.messages: list[str] = []

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name in self.fail:
            raise self.fail[name]

    def create_repo(self, repo_id: str, *, repo_type: str, private: bool, exist_ok: bool) -> None:
        assert (repo_type, private, exist_ok) == ("model", True, True)
        self._call("create_repo")

    def upload_folder(
        self,
        *,
        repo_id: str,
        folder_path: Path,
        repo_type: str,
        revision: str | None,
        commit_message: str,
    ) -> CommitInfo:
        self._call("upload_folder")
        files = sorted(p for p in Path(folder_path).rglob("*") if p.is_file())
        oid = hashlib.sha1(b"".join(p.name.encode() + p.read_bytes() for p in files)).hexdigest()
        repo = self.cache / f"models--{repo_id.replace('/', '--')}"
        shutil.copytree(folder_path, repo / "snapshots" / oid)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / (revision or "main")).write_text(oid)
        self.messages.append(commit_message)
        url = f"https://huggingface.co/{repo_id}/commit/{oid}"
        return CommitInfo(
            commit_url=url, commit_message=commit_message, commit_description="", oid=oid
        )


def test_the_pushed_ref_registers_and_verifies_from_the_hub_cache(
    tiny: Path, tmp_path: Path
) -> None:
    hub = CacheHub(tmp_path / "hub-cache")
    package = load_package(tiny)
    ref = push_to_hub(tiny, REPO, api=hub)
    assert re.fullmatch(rf"hf://{REPO}@[0-9a-f]{{40}}", ref)
    assert hub.calls == ["create_repo", "upload_folder"]
    assert package.ref in hub.messages[0] and package.digest in hub.messages[0]

    # what a consumer pod does with the ref: snapshot_download from the cache, then verify every
    # digest
    client = fakeredis.FakeRedis()
    settings = ConsumerSettings(
        redis_prefix="t:", model_cache_dir=tmp_path / "hub-cache", hub_offline=True
    )
    entry = register(ref, settings, client)
    assert entry["source"] == {"kind": "hub", "repo": REPO, "commit": ref.rsplit("@", 1)[1]}
    assert (entry["ref"], entry["digest"]) == (package.ref, package.digest)
    registry = Registry(client, "t:", tmp_path / "hub-cache", hub_offline=True)
    fetched = registry.load(package.ref)
    assert fetched.path.is_relative_to(tmp_path / "hub-cache") and fetched.digest == package.digest


def test_a_tampered_package_is_refused_before_any_upload(tiny: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(tiny, tmp_path / "pkg")
    onnx = copy / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0x01
    onnx.write_bytes(bytes(data))
    hub = CacheHub(tmp_path / "hub-cache")
    with pytest.raises(IntegrityError, match=r"model\.onnx"):
        push_to_hub(copy, REPO, api=hub)
    assert hub.calls == []


@pytest.mark.parametrize(
    "error",
    [
        HfHubHTTPError("403 Forbidden: no write access.\nRequest ID: Root=1-abc"),
        requests.ConnectionError("Max retries exceeded with url: /api/repos/create"),
    ],
)
def test_an_upload_error_becomes_a_publish_error_naming_the_repo(
    tiny: Path, tmp_path: Path, error: Exception
) -> None:
    hub = CacheHub(tmp_path / "hub-cache", fail={"upload_folder": error})
    with pytest.raises(PublishError) as info:
        push_to_hub(tiny, REPO, api=hub)
    message = str(info.value)
    assert (
        message.startswith(f"hf://{REPO}: upload failed: {type(error).__name__}")
        and "\n" not in message
    )
    assert not (tmp_path / "hub-cache").exists()


def test_a_repo_must_be_owner_slash_name(tiny: Path, tmp_path: Path) -> None:
    hub = CacheHub(tmp_path / "hub-cache")
    with pytest.raises(ConfigError, match="OWNER/NAME"):
        push_to_hub(tiny, "complaints-minilm", api=hub)
    assert hub.calls == []


def test_push_command_prints_the_ref_and_maps_errors_to_exit_codes(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("trainer.push.HfApi", lambda: CacheHub(tmp_path / "hub-cache"))
    assert cli.main(["push", str(tiny), "--repo", REPO]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["pushed"].startswith(f"hf://{REPO}@")

    denied = HfHubHTTPError("401 Unauthorized")
    monkeypatch.setattr(
        "trainer.push.HfApi",
        lambda: CacheHub(tmp_path / "other", fail={"upload_folder": denied}),
    )
    assert cli.main(["push", str(tiny), "--repo", REPO]) == 1
    assert capsys.readouterr().err.startswith(f"error: PublishError: hf://{REPO}: upload failed")


def test_train_checks_the_hub_repo_before_training(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def train_anyway(*args: object, **kwargs: object) -> None:
        raise AssertionError("trained although the push could never succeed")

    monkeypatch.setattr("trainer.train_command.run", train_anyway)
    denied = HfHubHTTPError("401 Unauthorized: invalid token")
    monkeypatch.setattr(
        "trainer.push.HfApi", lambda: CacheHub(tmp_path, fail={"create_repo": denied})
    )
    assert cli.main(["train", "--push-to-hub", REPO, "--out", str(tmp_path / "run")]) == 1
    assert cli.main(["train", "--push-to-hub", "no-owner", "--out", str(tmp_path / "run")]) == 2
