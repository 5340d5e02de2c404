#!/usr/bin/env bash
# Regenerate the hash-pinned lock files in requirements/ from pyproject.toml (uv, from PyPI).
#
#   dev.lock       every extra plus dev: what `make install` (and so every test tier and CI) installs
#   consumer.lock  the runtime image (base dependencies, no torch)
#   explainer.lock the explainer image (+ shap)
#   trainer.lock   the retraining image (+ torch, transformers, optimum, wandb)
#   build.lock     the build backend (setuptools), so image builds need no unpinned download
#
# The image locks are resolved with dev.lock as a constraint, so each is a subset of it with the same
# versions and hashes (tests/unit/test_locks.py checks that): an image runs what the tests passed with.
# Usage: scripts/lock.sh            # keep the pins of dev.lock where pyproject still allows them
#        scripts/lock.sh --upgrade  # resolve dev.lock afresh (newest versions pyproject allows)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v uv >/dev/null || python3 -m pip install -q uv
common=(--python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes --no-header --quiet)
dev_extra=()
[[ "${1:-}" == "--upgrade" ]] && dev_extra=(--upgrade)
uv pip compile pyproject.toml --all-extras "${common[@]}" "${dev_extra[@]}" -o requirements/dev.lock
uv pip compile pyproject.toml "${common[@]}" -c requirements/dev.lock -o requirements/consumer.lock
uv pip compile pyproject.toml --extra explain "${common[@]}" -c requirements/dev.lock -o requirements/explainer.lock
uv pip compile pyproject.toml --extra train "${common[@]}" -c requirements/dev.lock -o requirements/trainer.lock
requires="$(python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))')"
uv pip compile - "${common[@]}" -o requirements/build.lock <<<"$requires"
