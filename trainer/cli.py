"""``python -m trainer <command>``: tiny, train, compare, push, register. Exit 2 on bad input, no
traceback.

``train`` takes every ``TrainConfig`` field as a flag (``--max-length 128`` or ``--max_length=128``,
the form W&B sweep agents pass), on top of ``--config FILE``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any

from consumer.cli_help import HUB, RAW, REDIS, settings_epilog
from consumer.errors import AllocationError, ConfigError, InputError
from consumer.settings import CommonSettings
from trainer.paths import DEFAULT_DATA
from trainer.run_config import SOURCE_FIELDS, TrainConfig

REGISTER_SETTINGS = (*REDIS, "model_cache_dir")  # what trainer.register reads of CommonSettings

# Every command's flags, exit codes and dispatch are here; what a command does is in the module
# named for it (tiny, train_command, compare, push, register), imported only when that command
# runs, so compare and register never load torch. (The module docstring is the --help text.)


def _tiny(args: argparse.Namespace) -> int:
    from trainer.tiny import build_tiny

    pkg = build_tiny(Path(args.out), seed=args.seed)
    print(json.dumps({"package": str(pkg.path), "ref": pkg.ref, "digest": pkg.digest}))
    return 0


def _train(args: argparse.Namespace) -> int:
    from trainer.train_command import train_cli

    return train_cli(args)


def _compare(args: argparse.Namespace) -> int:
    from trainer.compare import compare_cli

    return compare_cli(args)


def _push(args: argparse.Namespace) -> int:
    from trainer.push import push_to_hub

    ref = push_to_hub(Path(args.package), args.repo)
    out: dict[str, Any] = {"pushed": ref}
    if args.register:
        from trainer.register import register

        out["registered"] = register(ref)
    print(json.dumps(out))
    return 0


def _register(args: argparse.Namespace) -> int:
    from trainer.register import register

    print(json.dumps(register(args.package)))
    return 0


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r}")


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {text!r}") from exc


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field; None means 'not given' so the file and defaults apply."""
    for f in dataclasses.fields(TrainConfig):
        names = sorted({f"--{f.name}", f"--{f.name.replace('_', '-')}"}, key=len)
        default = TrainConfig().__getattribute__(f.name)
        if f.name in SOURCE_FIELDS:
            parser.add_argument(
                *names, dest=f.name, action="append", help=f"{f.name} source (repeatable)"
            )
            continue
        kind = (
            _bool
            if isinstance(default, bool)
            else _json
            if isinstance(default, dict | tuple)
            else type(default)
        )
        parser.add_argument(
            *names, dest=f.name, type=kind, default=None, help=f"default {default!r}"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_tiny_parser, _train_parser, _compare_parser, _push_parser, _register_parser):
        add(sub)
    return parser


def _tiny_parser(sub: Any) -> None:
    tiny = sub.add_parser("tiny", help="write a small random-weight model package (tests)")
    tiny.add_argument("--out", required=True, help="package folder (replaced)")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(func=_tiny)


def _registering(title: str = "settings (environment)") -> dict[str, Any]:
    """The help epilog of a command that registers (``trainer.register``) or pushes to the hub."""
    return {
        "epilog": settings_epilog(CommonSettings, REGISTER_SETTINGS, extra=HUB, title=title),
        "formatter_class": RAW,
    }


def _train_parser(sub: Any) -> None:
    train = sub.add_parser(
        "train",
        help="fine-tune, export, calibrate and package a model",
        **_registering("settings (environment) of --push-to-hub and --register"),
    )
    train.add_argument(
        "--config",
        help="YAML or JSON file of TrainConfig fields, or a shipped recipe by name "
        "(default: the published one)",
    )
    train.add_argument(
        "--out",
        help="output folder (package/, checkpoints/, report); "
        "default artifacts/runs/<version>, so each sweep run gets its own",
    )
    train.add_argument(
        "--resume", action="store_true", help="continue from out/checkpoints/last.pt"
    )
    train.add_argument(
        "--push-to-hub",
        metavar="OWNER/REPO",
        help="push the package to this hub model repo (token HF_TOKEN, hub HF_ENDPOINT); "
        "--register then registers the pushed hf:// ref, which consumer pods can fetch",
    )
    train.add_argument(
        "--register",
        action="store_true",
        help="register the package in Redis when done (the pushed hf:// ref with --push-to-hub)",
    )
    _add_config_flags(train)
    train.set_defaults(func=_train)


def _compare_parser(sub: Any) -> None:
    comp = sub.add_parser("compare", help="champion vs challenger on the same rows")
    side = "a package folder, or a replay's JSON lines (allocator replay --jsonl FILE.jsonl)"
    comp.add_argument("--champion", required=True, help=side)
    comp.add_argument("--challenger", required=True, help=side)
    comp.add_argument("--data", default=str(DEFAULT_DATA))
    comp.add_argument("--split", default="test", choices=["val", "test"], help="never the holdout")
    comp.add_argument("--limit", type=int, default=0, help="at most this many rows (0: all)")
    comp.add_argument(
        "--out", default="compare-report", help="folder for report.json and report.md"
    )
    comp.add_argument(
        "--wandb-mode", default="disabled", help="log the report to W&B unless disabled"
    )
    comp.set_defaults(func=_compare)


def _push_parser(sub: Any) -> None:
    push = sub.add_parser(
        "push",
        help="push a package to a hub model repo; prints its pinned hf:// ref",
        **_registering("settings (environment); Redis only with --register"),
    )
    push.add_argument("package", help="package folder (verified before anything is uploaded)")
    push.add_argument(
        "--repo", required=True, metavar="OWNER/REPO", help="hub model repo (created private)"
    )
    push.add_argument(
        "--register", action="store_true", help="register the pushed hf:// ref in Redis"
    )
    push.set_defaults(func=_push)


def _register_parser(sub: Any) -> None:
    reg = sub.add_parser(
        "register",
        help="register a package as a challenger in the Redis registry",
        **_registering(),
    )
    reg.add_argument("package", help="package folder or pinned hf://owner/repo@<commit> ref")
    reg.set_defaults(func=_register)


def main(argv: list[str] | None = None) -> int:
    # Root at WARNING: onnxruntime's quantiser logs one INFO line per tensor on the root logger.
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("trainer").setLevel(logging.INFO)
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (InputError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except AllocationError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
