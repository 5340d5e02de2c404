"""Small helpers shared by the panel functions: selectors, targets and the panel kinds we use."""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog import builder as cog
from grafana_foundation_sdk.models import common, dashboard
from grafana_foundation_sdk.models import prometheus as prometheus_m

# What the panel functions and variables build, for the type checker.
Panel = cog.Builder[dashboard.Panel]
Variable = cog.Builder[dashboard.VariableModel]

# Every panel queries the data source chosen in the dashboard's variable.
DATASOURCE = dashboard.DataSourceRef(type_val="prometheus", uid="${datasource}")
# Grafana picks a rate window of at least four scrape intervals.
RATE = "$__rate_interval"


def sel(metric: str, **labels: str) -> str:
    """``metric{namespace=~"$namespace", k="v", ...}``; a value starting with ``~`` is a regex
    match."""
    matchers = ['namespace=~"$namespace"']
    for key, value in labels.items():
        op, value = ("=~", value[1:]) if value.startswith("~") else ("=", value)
        matchers.append(f'{key}{op}"{value}"')
    return f"{metric}{{{', '.join(matchers)}}}"


def rate(metric: str, by: str = "", **labels: str) -> str:
    """``sum by (by) (rate(metric{...}[$__rate_interval]))``."""
    group = f" by ({by})" if by else ""
    return f"sum{group} (rate({sel(metric, **labels)}[{RATE}]))"


def quantile(q: float, histogram: str, by: str = "", **labels: str) -> str:
    """The q-quantile of a histogram over the rate window, optionally per ``by`` labels."""
    group = ", ".join(x for x in (by, "le") if x)
    buckets = sel(histogram + "_bucket", **labels)
    return f"histogram_quantile({q}, sum by ({group}) (rate({buckets}[{RATE}])))"


def target(
    expr: str, legend: str = "", ref: str = "A", instant: bool = False
) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).ref_id(ref).legend_format(legend or "__auto")
    if instant:
        query = query.instant().format(prometheus_m.PromQueryFormat.TABLE)
    return query


def series(
    title: str,
    description: str,
    unit: str,
    *targets: prometheus.Dataquery,
    stack: bool = False,
    width: int = 12,
    height: int = 8,
) -> timeseries.Panel:
    """A time series panel; legends as a table so long label sets stay readable."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(height)
        .fill_opacity(10)
        .line_width(1)
        .legend(
            common_b.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
    )
    if stack:
        panel = panel.stacking(
            common_b.StackingConfig().mode(common.StackingMode.NORMAL)
        ).fill_opacity(40)
    for t in targets:
        panel = panel.with_target(t)
    return panel


def single(
    title: str,
    description: str,
    unit: str,
    query: prometheus.Dataquery,
    steps: list[tuple[float | None, str]],
    width: int = 6,
    height: int = 4,
    mappings: list[dashboard.ValueMapping] | None = None,
) -> stat.Panel:
    """A stat panel coloured by thresholds ``[(None, "green"), (1, "red"), ...]``."""
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(height)
        .with_target(query)
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .thresholds(
            dash_b.ThresholdsConfig()
            .mode(dashboard.ThresholdsMode.ABSOLUTE)
            .steps([dashboard.Threshold(value=v, color=c) for v, c in steps])
        )
    )
    if mappings:
        panel = panel.mappings(mappings)
    return panel


def grid(
    title: str, description: str, query: prometheus.Dataquery, width: int = 24, height: int = 6
) -> table.Panel:
    """A table of an instant query (one row per series)."""
    return (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .span(width)
        .height(height)
        .with_target(query)
    )


def updown() -> list[dashboard.ValueMapping]:
    """0/1 gauges shown as DOWN/UP."""
    return [
        dashboard.ValueMap(
            options={
                "0": dashboard.ValueMappingResult(text="DOWN", color="red"),
                "1": dashboard.ValueMappingResult(text="UP", color="green"),
            }
        )
    ]
