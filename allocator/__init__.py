"""``allocator``: the one console command, and its composition root.

The runtime core (``consumer``) owns the core commands and the error handling (``consumer.cli``);
the processes that import the core add their own: ``promoter`` always (it needs nothing beyond the
core's dependencies), ``explainer`` when its extra is installed (shap is not in the consumer
image). This is the only module that imports every process package, so ``consumer`` imports none
(``tests/unit/test_architecture.py`` enforces it).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from consumer.cli import add_core_commands, dispatch
from promoter.cli import add_promoter_commands

DESCRIPTION = (
    "Allocate bank complaints to teams with versioned ONNX models: publish and consume complaints,"
    " manage the model registry and the deployment strategy, run the promoter and the explainer."
)


def build_parser() -> argparse.ArgumentParser:
    """Every ``allocator`` command this installation can run."""
    parser = argparse.ArgumentParser(prog="allocator", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    add_core_commands(sub)
    add_promoter_commands(sub)
    try:
        from explainer.cli import add_explain_commands
    except ImportError:  # the consumer image has no explainer (shap is in the `explain` extra)
        pass
    else:
        add_explain_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv``) and run the command; returns the exit status."""
    args = build_parser().parse_args(argv)
    return dispatch(args, f"allocator {args.command}")
