from __future__ import annotations

from pathlib import Path

import pytest

from tests.tiny_packages import tiny_package


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_package(tmp_path_factory.mktemp("models"), 0)


@pytest.fixture(scope="session")
def tiny2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_package(tmp_path_factory.mktemp("models"), 1)
