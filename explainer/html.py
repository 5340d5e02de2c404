"""A self-contained HTML page of an ``explanation/v1`` document, for people: no scripts, no external
assets.

The complaint text is shown whole, each token the model saw on a background from ``PALETTE`` by the
sign and size of its value relative to the largest one (five solid steps each way, so that a
screenshot test can look for the exact colours); text the long-text policy cut is hatched grey.
Every string from the document is escaped.
"""

from __future__ import annotations

import html
import math
from importlib import resources
from string import Template
from typing import Any

# ColorBrewer Reds and Blues (light to dark): red raises the probability of the label, blue lowers
# it.
PALETTE = {
    "p": ("#fee5d9", "#fcbba1", "#fc9272", "#fb6a4a", "#de2d26"),
    "n": ("#eff3ff", "#c6dbef", "#9ecae1", "#6baed6", "#3182bd"),
}
# tokens below 5% of the largest |value| are left plain: noise would only distract
_MIN_SHARE = 0.05


def level(value: float, scale: float) -> int:
    """0 (plain) to 5 (darkest) for ``|value| / scale``."""
    if scale <= 0:
        return 0
    share = abs(value) / scale
    return 0 if share < _MIN_SHARE else min(5, max(1, math.ceil(share * 5)))


def _css() -> str:
    rules = []
    for sign, colours in PALETTE.items():
        for i, colour in enumerate(colours, start=1):
            ink = "#fff" if i == 5 else "#1f2328"
            rules.append(f"  .{sign}{i} {{ background: {colour}; color: {ink}; }}")
    return "\n".join(rules)


def _highlighted(doc: dict[str, Any]) -> str:
    text: str = doc["text"]
    scale = max((abs(v) for v in doc["values"]), default=0.0)
    marks = [
        (s, e, "tok", v, t)
        for (s, e), v, t in zip(doc["offsets"], doc["values"], doc["tokens"], strict=True)
    ]
    marks += [(s, e, "cut", 0.0, "") for s, e in doc["dropped_spans"]]
    out, pos = [], 0
    for start, end, kind, value, token in sorted(marks):
        if (
            start < pos
        ):  # overlapping spans cannot happen with a sane tokenizer; never print text twice
            continue
        out.append(html.escape(text[pos:start]))
        piece = html.escape(text[start:end])
        if kind == "cut":
            out.append(
                '<span class="dropped" title="not seen by the model (long-text '
                f'policy)">{piece}</span>'
            )
        else:
            lv = level(value, scale)
            cls = f"t {'p' if value > 0 else 'n'}{lv}" if lv else "t"
            title = html.escape(f"{token}: {value:+.5f}")
            out.append(f'<span class="{cls}" title="{title}">{piece}</span>')
        pos = end
    out.append(html.escape(text[pos:]))
    return "".join(out)


def _reasons(items: list[dict[str, Any]], sign: str, scale: float) -> str:
    """An ordered list of reasons, each with a bar ``120 * |value| / scale`` pixels long."""
    if not items:
        return '<p class="note">none</p>'
    rows = []
    for w in items:
        width = 0 if scale <= 0 else max(2, min(120, round(120 * abs(w["value"]) / scale)))
        colour = PALETTE[sign][3]  # one strong colour: the bar's length carries the size
        times = f" &times;{w['count']}" if w["count"] > 1 else ""
        rows.append(
            f'<li><span class="bar" style="width:{width}px;background:{colour}"></span>'
            f"{html.escape(w['text'])}{times} "
            f'<span class="num">{w["value"]:+.5f}</span></li>'
        )
    return '<ol class="reasons">' + "".join(rows) + "</ol>"


def _facts(doc: dict[str, Any]) -> str:
    m, add, rep, ex = doc["model"], doc["additivity"], doc["reproduction"], doc["explainer"]

    def check(ok: bool | None) -> str:
        return (
            ""
            if ok is None
            else ('<span class="ok">ok</span>' if ok else '<span class="bad">FAILED</span>')
        )

    rows = [
        ("Task / explained label", f"{doc['task']} / {doc['label']}"),
        (
            "Decided label",
            f"{doc['predicted']['label']} (score {doc['predicted']['score']:.4f}, arm "
            f"{doc['predicted']['arm']})",
        ),
        ("Model", f"{m['name']}@{m['version']}"),
        ("Model package sha256", f"<code>{html.escape(m['sha256'])}</code>"),
        ("Strategy version", str(doc["strategy"]["version"])),
        (
            "Input",
            f"{doc['source']['topic']} / partition {doc['source']['partition']} / offset "
            f"{doc['source']['offset']} (text from {doc['text_from']})",
        ),
        ("Input sha256", f"<code>{html.escape(doc['input_sha256'])}</code> {check(True)}"),
        (
            "Additivity",
            f"base {add['base_value']:.6f} + sum {add['sum_values']:+.6f} = "
            f"{add['base_value'] + add['sum_values']:.6f} vs model {add['model_output']:.6f} "
            f"({add['space']}, |error| {add['error']:.1e} &le; {add['tolerance']:g}) "
            f"{check(add['ok'])}",
        ),
        (
            "Reproduces the decision",
            "label not in the recorded top-k"
            if rep["recorded_score"] is None
            else f"recorded {rep['recorded_score']:.6f}, "
            f"recomputed {rep['recomputed_score']:.6f} {check(rep['ok'])}",
        ),
        (
            "Explainer",
            f"{ex['algorithm']}; {ex['masker']}; {ex['evals']} of max {ex['max_evals']} "
            "evaluations in "
            f"{ex['seconds']:.2f} s; shap {ex['shap_version']}",
        ),
    ]
    # these cells hold markup of ours, and their document strings are escaped where they are built
    safe = {"Model package sha256", "Input sha256", "Additivity", "Reproduces the decision"}
    return "\n".join(
        f"    <tr><th>{html.escape(k)}</th><td>{v if k in safe else html.escape(v)}</td></tr>"
        for k, v in rows
    )


def render(doc: dict[str, Any]) -> str:
    """The HTML page of ``doc`` (an ``explanation/v1`` document)."""
    template = Template(
        resources.files("explainer").joinpath("templates", "explanation.html").read_text("utf-8")
    )
    reasons = doc["top_reasons"]
    # a reason sums a word's occurrences, so bars get their own scale: the largest reason is the
    # full bar
    bar_scale = max((abs(w["value"]) for w in (*reasons["for"], *reasons["against"])), default=0.0)
    legend = "".join(
        f'<span class="sw" style="background:{c}"></span>'
        for c in (*reversed(PALETTE["n"]), *PALETTE["p"])
    )
    note = ""
    if doc["truncated"]:
        note = (
            '<p class="note">The text is longer than the model reads: hatched parts were cut by '
            "the model "
            "package's long-text policy and played no part in the decision.</p>"
        )
    e = html.escape
    return template.substitute(
        label=e(doc["label"]),
        label_q=e(repr(doc["label"])),
        task=e(doc["task"]),
        decision_id=e(doc["decision_id"]),
        decision_short=e(doc["decision_id"][:12]),
        complaint_id=e(doc["complaint_id"]),
        allocated_at=e(doc["allocated_at"]),
        output_pct=f"{100 * doc['output']:.1f}%",
        base_pct=f"{100 * doc['base_value']:.1f}%",
        hidden="left out" if doc["explainer"].get("masking") == "remove" else "masked",
        predicted_label=e(doc["predicted"]["label"]),
        predicted_pct=f"{100 * doc['predicted']['score']:.1f}%",
        palette_css=_css(),
        legend=legend,
        highlighted=_highlighted(doc),
        truncation_note=note,
        reasons_for=_reasons(reasons["for"], "p", bar_scale),
        reasons_against=_reasons(reasons["against"], "n", bar_scale),
        facts=_facts(doc),
    )
