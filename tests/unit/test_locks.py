"""The hash-pinned locks (requirements/*.lock): each image's lock is the tests' lock narrowed, never
different."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REQ = ROOT / "requirements"
PIN = re.compile(r"^([A-Za-z0-9_.-]+)==(\S+) \\$")
HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, tuple[str, frozenset[str]]]:
    """{name: (version, hashes)}; every pin must carry at least one hash (pip --require-hashes)."""
    pins: dict[str, tuple[str, frozenset[str]]] = {}
    name = None
    for line in path.read_text().splitlines():
        if m := PIN.match(line):
            name = norm(m[1])
            pins[name] = (m[2], frozenset())
        elif name and (h := HASH.search(line)):
            version, hashes = pins[name]
            pins[name] = (version, hashes | {h[1]})
    assert pins, f"{path.name} pins nothing"
    assert all(h for _, h in pins.values()), f"{path.name}: a pin without a hash"
    return pins


def requirement_names(specs: list[str]) -> set[str]:
    return {norm(re.split(r"[<>=!~\[; ]", s, maxsplit=1)[0]) for s in specs}


PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@pytest.mark.parametrize(
    ("lock", "extras"), [("consumer", []), ("explainer", ["explain"]), ("trainer", ["train"])]
)
def test_image_lock_is_a_subset_of_the_test_lock_with_the_same_pins(
    lock: str, extras: list[str]
) -> None:
    dev, image = read_lock(REQ / "dev.lock"), read_lock(REQ / f"{lock}.lock")
    differ = {n: (v, dev.get(n)) for n, v in image.items() if dev.get(n) != v}
    assert not differ, f"{lock}.lock pins differently from dev.lock: {differ}"
    wanted = requirement_names(
        PROJECT["dependencies"] + [d for e in extras for d in PROJECT["optional-dependencies"][e]]
    )
    assert wanted <= set(image), f"{lock}.lock lacks {wanted - set(image)}"


def test_runtime_lock_has_no_torch_and_the_test_lock_has_every_extra() -> None:
    assert "torch" not in read_lock(REQ / "consumer.lock")
    assert "torch" not in read_lock(REQ / "explainer.lock")
    every = PROJECT["dependencies"] + [
        d for deps in PROJECT["optional-dependencies"].values() for d in deps
    ]
    assert requirement_names(every) <= set(read_lock(REQ / "dev.lock"))


def test_build_lock_pins_the_build_backend() -> None:
    backend = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    assert requirement_names(backend) <= set(read_lock(REQ / "build.lock"))
