"""The settings a command reads, for its ``--help``: rendered from the settings class itself (the
field descriptions are the reference, ``consumer.settings``), so the help cannot drift from it.

    sub.add_parser("consume", epilog=settings_epilog(ConsumerSettings), formatter_class=RAW)

One line per setting: its environment variable, its default, its description (wrapped under
itself). Secrets show ``(secret)``, never a value. ``fields`` narrows a class to what a command
really reads (``KAFKA``, ``REDIS``: the connection groups); ``extra`` adds variables a library reads
itself (``HUB``: huggingface_hub's). ``tests/unit/test_cli.py`` checks every command has its list.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from consumer.settings import DEFAULT_SECRETS_DIR, CommonSettings, env_name, is_secret

RAW = argparse.RawDescriptionHelpFormatter
WIDTH = 100
DEFAULT_COLUMN = 14  # longer defaults push their description right, on their line only

KAFKA = tuple(n for n in CommonSettings.model_fields if n.startswith("kafka_"))
REDIS = tuple(n for n in CommonSettings.model_fields if n.startswith("redis_"))
# the five topics of the contract (DESIGN section 2)
TOPICS = ("topic_complaints", "topic_allocations", "topic_shadow", "topic_dlq", "topic_feedback")

Extra = tuple[str, str, str]  # (variable, default, description) read by a library, not by us
# huggingface_hub reads these itself when an hf:// model ref is fetched
HUB: tuple[Extra, ...] = (
    ("HF_TOKEN", "(secret)", "huggingface_hub: token for private hf:// model repos."),
    ("HF_ENDPOINT", "huggingface.co", "huggingface_hub: a private hub mirror instead."),
)


def _default(field: FieldInfo) -> str:
    if is_secret(field):
        return "(secret)"
    if field.default_factory is not None:
        return "(computed)"
    value: Any = field.default
    if value is PydanticUndefined:
        return "(required)"
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def settings_epilog(
    cls: type[CommonSettings],
    fields: Iterable[str] | None = None,
    extra: Sequence[Extra] = (),
    title: str = "settings (environment)",
) -> str:
    """The epilog of a command that reads ``fields`` of ``cls`` (default: all of them)."""
    names = list(cls.model_fields) if fields is None else list(fields)
    unknown = [n for n in names if n not in cls.model_fields]
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {unknown}")
    rows = [
        (env_name(cls, n), _default(cls.model_fields[n]), cls.model_fields[n].description or "")
        for n in names
    ]
    rows += list(extra)
    name_w = max(len(r[0]) for r in rows)
    default_w = min(DEFAULT_COLUMN, max(len(r[1]) for r in rows))
    indent = " " * (2 + name_w + 2 + default_w + 2)
    lines = [f"{title}:"]
    for env, default, description in rows:
        head = f"  {env:<{name_w}}  {default:<{default_w}}  "
        line = textwrap.fill(
            description,
            WIDTH,
            initial_indent=head,
            subsequent_indent=indent,
            break_on_hyphens=False,
        )
        lines.append(line.rstrip() if description else head.rstrip())
    others = f" ({', '.join(e[0] for e in extra)} excepted)" if extra else ""
    lines.append(
        textwrap.fill(
            f"A file in ALLOCATOR_SECRETS_DIR (default {DEFAULT_SECRETS_DIR}, read when the folder "
            f"exists) named like one of these variables{others} sets it when the environment "
            "does not: a mounted Kubernetes Secret.",
            WIDTH,
        )
    )
    return "\n".join(lines)
