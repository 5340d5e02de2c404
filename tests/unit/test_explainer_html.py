"""The HTML page: highlighted tokens from the palette, reasons, facts, escaping, no external
assets."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from explainer.html import PALETTE, level, render
from explainer.testing import MemoryWorld

TEXT = (
    "I was charged a <b>late fee</b> & interest on my credit card even though I paid on time. "
    "The bank refused to refund it and my credit report now shows a late payment. "
    "<script>alert(1)</script>"
)
LONG = "The servicer lost my mortgage payment and reported me late to the credit bureaus. " * 14


@pytest.fixture(scope="module")
def docs(tiny: Path) -> dict[str, dict[str, Any]]:
    world = MemoryWorld(tiny)
    short = world.decide(TEXT, "c-1")
    long = world.decide(LONG, "c-2")
    return {
        "short": world.service.explain(short)[0],
        "long": world.service.explain(long, "issue")[0],
    }


def test_levels_scale_with_the_largest_value() -> None:
    assert [level(v, 1.0) for v in (0, 0.04, 0.05, 0.2, 0.21, 0.6, 1.0, -1.0, 2.0)] == [
        0,
        0,
        1,
        1,
        2,
        3,
        5,
        5,
        5,
    ]
    assert level(0.3, 0.0) == 0


def test_tokens_are_highlighted_with_palette_classes(docs: dict[str, dict[str, Any]]) -> None:
    doc = docs["short"]
    page = render(doc)
    spans = re.findall(r'<span class="t( [pn][1-5])?" title="([^"]*)">([^<]*)</span>', page)
    assert len(spans) == len(doc["tokens"])
    coloured = [(c.strip(), v) for (c, _, _), v in zip(spans, doc["values"], strict=True) if c]
    assert len(coloured) >= len(spans) // 4
    assert all((c[0] == "p") == (v > 0) for c, v in coloured), (
        "red raises, blue lowers the probability"
    )
    strongest = max(range(len(doc["values"])), key=lambda i: abs(doc["values"][i]))
    sign = "p" if doc["values"][strongest] > 0 else "n"
    assert spans[strongest][0].strip() == f"{sign}5", (
        "the largest contribution gets the darkest colour"
    )
    for colours in PALETTE.values():
        assert all(c in page for c in colours), "the palette is in the stylesheet"


def test_page_is_self_contained_and_escapes_the_text(docs: dict[str, dict[str, Any]]) -> None:
    page = render(docs["short"])
    assert "<script" not in page and "<b>late" not in page
    text = re.sub(r"</?span[^>]*>", "", page)  # every token is a span of its own
    assert (
        "&lt;script&gt;alert(1)&lt;/script&gt;" in text
        and "&lt;b&gt;late fee&lt;/b&gt; &amp; interest" in text
    )
    for external in ("http://", "https://", "src=", "<link", "@import", "url("):
        assert external not in page, external
    assert page.startswith("<!doctype html>") and "$" not in page.replace("$$", "")


def test_page_states_the_decision_model_and_checks(docs: dict[str, dict[str, Any]]) -> None:
    doc = docs["short"]
    page = render(doc)
    for fact in (
        doc["decision_id"],
        doc["model"]["sha256"],
        doc["input_sha256"],
        doc["model"]["ref"],
        "Additivity",
    ):
        assert fact in page
    assert "Top reasons for" in page and page.count('<span class="ok">ok</span>') >= 2
    for word in doc["top_reasons"]["for"][:3]:
        assert word["text"] in page


def test_cut_text_is_marked_as_not_seen(docs: dict[str, dict[str, Any]]) -> None:
    doc = docs["long"]
    assert doc["truncated"] and doc["dropped_spans"]
    page = render(doc)
    assert page.count('class="dropped"') == len(doc["dropped_spans"])
    assert "long-text policy" in page
