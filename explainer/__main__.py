"""``python -m explainer serve|DECISION_ID ...``: the ``allocator explain`` command on its own (same
arguments)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from consumer.cli import dispatch
from explainer.cli import add_explain_commands


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m explainer")
    sub = parser.add_subparsers(dest="command", required=True)
    add_explain_commands(sub)
    args = parser.parse_args(["explain", *(sys.argv[1:] if argv is None else argv)])
    return dispatch(args, "explainer")


if __name__ == "__main__":
    sys.exit(main())
