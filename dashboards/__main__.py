"""``python -m dashboards [--check] [--chart DIR]``: write the generated files, or check them for
drift."""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from dashboards.generate import CHART_DIR, files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards", description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="fail if a committed file differs from the code"
    )
    parser.add_argument(
        "--chart", type=Path, default=CHART_DIR, help="chart directory (default: %(default)s)"
    )
    args = parser.parse_args(argv)

    drifted = []
    for rel, text in files().items():
        path = args.chart / rel
        current = path.read_text() if path.exists() else ""
        if current == text:
            continue
        if args.check:
            drifted.append(str(rel))
            sys.stdout.writelines(
                difflib.unified_diff(
                    current.splitlines(keepends=True),
                    text.splitlines(keepends=True),
                    f"committed/{rel}",
                    f"generated/{rel}",
                    n=1,
                )
            )
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if drifted:
        print(
            f"\n{len(drifted)} generated file(s) out of date: run `python -m dashboards`",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
