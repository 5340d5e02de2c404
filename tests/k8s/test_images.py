"""Issue 21: each image that ``scripts/images.sh`` built for this checkout, run as it ships
(buildah, chroot)."""

from __future__ import annotations

import subprocess

import pytest

from tests.k8s.conftest import ROOT

pytestmark = pytest.mark.k8s

PROBE = (
    "import importlib.util as u, os, sys; "
    "print(os.getuid(), os.getgid()); "
    "print(*(n for n in ('torch', 'shap', 'onnxruntime') if u.find_spec(n))); "
    "print(os.environ['ALLOCATOR_CODE_COMMIT'])"
)
# The trainer writes the commit into each model's lineage (manifest.json) through code_commit().
LINEAGE = "from trainer.packaging import code_commit; print(code_commit())"


def run_in(image: str, *cmd: str) -> str:
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "images.sh"), "run", image, *cmd],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if out.returncode == 125 or "no such image" in out.stderr or "image not known" in out.stderr:
        pytest.fail(
            f"image {image} is not built for this checkout: run `make images`\n{out.stderr[-2000:]}"
        )
    assert out.returncode == 0, (image, cmd, out.stdout[-2000:], out.stderr[-2000:])
    return out.stdout


@pytest.fixture(scope="module")
def head() -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.mark.parametrize(
    ("image", "modules"),
    [
        ("consumer", "onnxruntime"),
        ("explainer", "shap onnxruntime"),
        ("trainer", "torch onnxruntime"),
    ],
)
def test_image_runs_as_non_root_with_only_its_dependencies_and_the_real_commit(
    image: str, modules: str, head: str
) -> None:
    uid_gid, found, commit = run_in(image, "python", "-c", PROBE).splitlines()
    assert uid_gid == "10001 10001", "runs as the unprivileged app user"
    assert found == modules, "the runtime images never carry torch; only the explainer has shap"
    assert commit.removesuffix("-dirty") == head, "the image names the commit it was built from"
    if image == "trainer":
        lineage = run_in(image, "python", "-c", LINEAGE).strip()
        assert lineage == commit, "model lineage names the commit the image was built from"


@pytest.mark.parametrize("image", ["consumer", "explainer"])
def test_allocator_help_works(image: str) -> None:
    out = run_in(image, "allocator", "--help")
    assert "consume" in out and "explain" in out
