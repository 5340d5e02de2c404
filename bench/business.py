"""``python -m bench.business --automation FILE --throughput FILE``: the business case in numbers.

It combines what was measured (the fully automatic share of ``bench.automation``, on the holdout by
default; the end-to-end throughput per core and the p99 latency of ``bench.throughput``) with the
stated inputs of ``bench/business.inputs.yaml`` (the seed's team and load, prices; ``--set
name=value`` overrides one), and prints, per scenario of the seed's range (complaints a day x
minutes a triage): the analyst hours and cost saved a day, the infrastructure cost a day and per
1,000 complaints, and whether the seed's goals hold (at least 50% cost saving, at least 50% less
time to allocate). Nothing is a constant of the code: every figure in the table is computed from a
named input or a measurement, and the last line is one JSON object with both.

The model (docs/business.md): people triage what the model does not decide alone; a complaint whose
team and issue are both automated needs no triage analyst; one automated in part costs a person
``partial_automation_time_share`` of a triage (1.0 by default: no credit). The loaded cost of an
analyst hour carries the supervisor. The time to allocate is the triage time for the share of
complaints (and of partial triages) people do, and the measured p99 latency for the rest (queueing
before a person is left out, which favours the human baseline).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
INPUTS = Path(__file__).with_name("business.inputs.yaml")
PLOT = ROOT / "docs" / "img" / "business.png"


class InputError(ValueError):
    """A missing or malformed input: the message names it."""


def last_json(path: Path) -> dict[str, Any]:
    """The last line of a bench's output that is a JSON object."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc
    for line in reversed(lines):
        if line.startswith("{"):
            return dict(json.loads(line))
    raise InputError(f"{path} has no JSON line (save the bench's whole output)")


def measured(automation: dict[str, Any], throughput: dict[str, Any], split: str) -> dict[str, Any]:
    """The measured inputs, named."""
    try:
        r = automation["results"][split]
        fa = r["fully_automatic"]
        team, issue = r["team"], r["issue"]
        cores = float(throughput["cpus"])
        return {
            "split": split,
            "model": automation["model"],
            "fully_automatic_share": float(fa["share"]),
            "team_only_share": float(team["coverage"]) - float(fa["share"]),
            "issue_only_share": float(issue["coverage"]) - float(fa["share"]),
            "team_coverage": float(team["coverage"]),
            "issue_coverage": float(issue["coverage"]),
            "e2e_per_s_per_core": float(throughput["e2e_per_s"]) / cores,
            "p99_latency_s": float(throughput["p99_ms"]) / 1000,
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(
            f"the benches' JSON lacks {exc} (split {split!r}): run python -m bench.automation "
            "and python -m bench.throughput and pass their output"
        ) from exc


def scenario(n: float, minutes: float, i: dict[str, Any], m: dict[str, Any]) -> dict[str, Any]:
    """One day at ``n`` complaints and ``minutes`` a triage."""
    hours_per_year = i["working_days_per_year"] * i["hours_per_day"]
    rate = (
        (i["analysts"] * i["analyst_salary_gbp"] + i["supervisors"] * i["supervisor_salary_gbp"])
        * i["on_cost_multiplier"]
        / (i["analysts"] * hours_per_year)
    )
    human_hours = n * minutes / 60
    partial = m["team_only_share"] + m["issue_only_share"]
    people_share = (
        1 - m["fully_automatic_share"] - partial * (1 - i["partial_automation_time_share"])
    )
    hours_saved = human_hours * (1 - people_share)
    per_s = n / 86_400
    consumer_vcpus = max(
        i["consumer_min_vcpus"],
        math.ceil(per_s / (m["e2e_per_s_per_core"] * i["consumer_target_utilisation"])),
    )
    vcpus = consumer_vcpus + i["promoter_vcpus"] + i["explainer_vcpus"]
    infra = (
        vcpus * 24 * i["vcpu_hour_gbp"]
        + i["kafka_gbp_per_day"]
        + i["redis_gbp_per_day"]
        + i["postgres_gbp_per_day"]
    )
    human_cost = human_hours * rate
    saved_gross = hours_saved * rate
    net = saved_gross - infra
    time_human = minutes * 60
    # a person's share of a triage delays the allocation as it costs: the same people_share
    time_model = people_share * minutes * 60 + (1 - people_share) * m["p99_latency_s"]
    cost_saving = net / human_cost
    time_saving = 1 - time_model / time_human
    return {
        "complaints_per_day": n,
        "minutes_per_triage": minutes,
        "loaded_gbp_per_analyst_hour": rate,
        "human_triage_hours_per_day": human_hours,
        "analysts_needed_without_model": human_hours / i["hours_per_day"],
        "analyst_hours_saved_per_day": hours_saved,
        "analyst_cost_per_day_without_model_gbp": human_cost,
        "analyst_cost_saved_per_day_gbp": saved_gross,
        "consumer_vcpus": consumer_vcpus,
        "infrastructure_per_day_gbp": infra,
        "infrastructure_per_1000_complaints_gbp": infra / n * 1000,
        "net_saving_per_day_gbp": net,
        "cost_saving_share": cost_saving,
        "mean_seconds_to_allocate_without_model": time_human,
        "mean_seconds_to_allocate_with_model": time_model,
        "time_saving_share": time_saving,
        "cost_goal_met": cost_saving >= i["goal_cost_saving"],
        "time_goal_met": time_saving >= i["goal_time_saving"],
    }


def load_inputs(path: Path, overrides: list[str]) -> dict[str, Any]:
    try:
        inputs = dict(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError, TypeError, ValueError) as exc:
        raise InputError(f"cannot read the inputs {path}: {exc}") from exc
    for item in overrides:
        name, sep, raw = item.partition("=")
        if not sep or name not in inputs:
            raise InputError(f"--set {item!r}: name one of {sorted(inputs)} as NAME=VALUE")
        inputs[name] = yaml.safe_load(raw)
    for name in ("complaints_per_day", "minutes_per_triage"):
        if not isinstance(inputs[name], list):
            inputs[name] = [inputs[name]]
    return inputs


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['complaints_per_day']:,.0f}/day\n{r['minutes_per_triage']:g} min" for r in rows]
    before = [r["analyst_cost_per_day_without_model_gbp"] for r in rows]
    after_people = [before[k] - rows[k]["analyst_cost_saved_per_day_gbp"] for k in range(len(rows))]
    infra = [r["infrastructure_per_day_gbp"] for r in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(7.5, 4))
    ax.bar([k - 0.2 for k in x], before, 0.4, label="people only")
    ax.bar([k + 0.2 for k in x], after_people, 0.4, label="with the model: people")
    ax.bar([k + 0.2 for k in x], infra, 0.4, bottom=after_people, label="with the model: infra")
    ax.set_xticks(list(x), labels)
    ax.set_ylabel("triage cost per day (GBP)")
    ax.set_title("Triage cost per day, from measured coverage and stated prices", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(rows: list[dict[str, Any]], m: dict[str, Any]) -> str:
    head = (
        f"{'complaints/day':>14} {'min':>4} {'hours saved':>12} {'£ saved':>9} {'£ infra':>8} "
        f"{'£/1k':>6} {'cost -%':>8} {'time -%':>8}  goals (cost, time)"
    )
    lines = [
        f"measured ({m['split']}, {m['model']}): fully automatic {m['fully_automatic_share']:.1%},"
        f" team {m['team_coverage']:.1%}, issue {m['issue_coverage']:.1%}; "
        f"{m['e2e_per_s_per_core']:.1f} msg/s per core, p99 {m['p99_latency_s']:.2f} s",
        head,
        "-" * len(head),
    ]
    for r in rows:
        lines.append(
            f"{r['complaints_per_day']:>14,.0f} {r['minutes_per_triage']:>4g} "
            f"{r['analyst_hours_saved_per_day']:>12.1f} "
            f"{r['analyst_cost_saved_per_day_gbp']:>9.0f} "
            f"{r['infrastructure_per_day_gbp']:>8.2f} "
            f"{r['infrastructure_per_1000_complaints_gbp']:>6.2f} "
            f"{100 * r['cost_saving_share']:>7.1f}% {100 * r['time_saving_share']:>7.1f}%  "
            f"{'yes' if r['cost_goal_met'] else 'no'}, {'yes' if r['time_goal_met'] else 'no'}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.business", description=__doc__)
    parser.add_argument("--automation", required=True, help="bench.automation's output (a file)")
    parser.add_argument("--throughput", required=True, help="bench.throughput's output (a file)")
    parser.add_argument(
        "--split", default="holdout", help="whose coverage: holdout (default), test"
    )
    parser.add_argument("--inputs", default=str(INPUTS), help="the stated inputs (YAML)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--plot", default=str(PLOT), help=f"PNG to write (default {PLOT})")
    args = parser.parse_args(argv)
    try:
        inputs = load_inputs(Path(args.inputs), args.set)
        m = measured(last_json(Path(args.automation)), last_json(Path(args.throughput)), args.split)
        rows = [
            scenario(float(n), float(t), inputs, m)
            for n, t in itertools.product(
                inputs["complaints_per_day"], inputs["minutes_per_triage"]
            )
        ]
    except (InputError, KeyError) as exc:
        parser.exit(2, f"bench.business: {exc}\n")
    plot(rows, Path(args.plot))
    print(table(rows, m))
    print(json.dumps({"inputs": inputs, "measured": m, "scenarios": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
