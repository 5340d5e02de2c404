"""Push a model package to a Hugging Face Hub model repo, so that consumer pods can fetch it.

In a cluster the trainer writes its package into its own pod; consumers resolve only a folder of
their own or a pinned ``hf://owner/repo@<commit>`` ref (``consumer.registry``). ``push_to_hub``
verifies the package, commits it to the repo and returns that pinned ref, ready for
``trainer.register.register``.

Credentials and the hub address come from huggingface_hub's own environment handling: ``HF_TOKEN``
(a token with write access to the repo) and ``HF_ENDPOINT`` (a private hub mirror instead of
huggingface.co).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, HFValidationError

from consumer.errors import ConfigError
from consumer.package import load_package
from consumer.registry import HUB_REF
from trainer.errors import PublishError

REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")  # the owner/name part of consumer.registry.HUB_REF


@contextmanager
def map_hub_errors(repo_id: str, action: str) -> Iterator[None]:
    """The one boundary where hub client and HTTP failures become a one-line ``PublishError`` naming
    the repo."""
    try:
        yield
    # requests' errors (HfHubHTTPError among them) are OSErrors; HFValidationError is a bad repo id
    # or revision
    except (HfHubHTTPError, HFValidationError, OSError) as exc:
        detail = " ".join(
            str(exc).split()
        )  # hub errors span several lines (server message, request id)
        raise PublishError(
            f"hf://{repo_id}: {action} failed: {type(exc).__name__}: {detail}"
        ) from exc


def ensure_repo(repo_id: str, *, private: bool = True, api: HfApi | None = None) -> None:
    """Create the model repo ``owner/name`` unless it exists (an existing repo keeps its
    visibility).

    Cheap enough to call before a long training run, so that a missing token or a wrong repo fails
    at start. Raises ``ConfigError`` for a repo id that is not ``owner/name``, ``PublishError`` when
    the hub refuses.
    """
    if not REPO_ID.match(repo_id):
        raise ConfigError(f"{repo_id!r}: a hub repo is OWNER/NAME")
    api = api or HfApi()
    with map_hub_errors(repo_id, "create repo"):
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)


def push_to_hub(
    package_dir: Path | str,
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool = True,
    api: HfApi | None = None,
) -> str:
    """Verify the package in ``package_dir``, commit it to ``repo_id`` and return
    ``hf://<repo_id>@<commit>``.

    ``revision`` is an existing branch to commit to (default: the repo's default branch);
    ``private`` applies only when the repo is created. ``api`` defaults to an ``HfApi`` configured
    from the environment. Raises ``PackageError``/``IntegrityError`` before anything is uploaded
    when the package does not verify, ``PublishError`` when the hub refuses the push or cannot be
    reached.
    """
    package = load_package(package_dir)
    api = api or HfApi()
    ensure_repo(repo_id, private=private, api=api)
    with map_hub_errors(repo_id, "upload"):
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=package.path,
            repo_type="model",
            revision=revision,
            commit_message=f"Add {package.ref} (package sha256 {package.digest})",
        )
    ref = f"hf://{repo_id}@{commit.oid}"
    if not HUB_REF.match(ref):
        raise PublishError(
            f"hf://{repo_id}: the hub answered commit {commit.oid!r}, not a 40-hex commit id"
        )
    return ref
