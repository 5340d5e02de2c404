"""Grafana dashboards and Prometheus alert rules of complaints-allocation, as code.

One function per panel (``flow.py``, ``models.py``) built with grafana-foundation-sdk, and one
list of alerts (``alerts.py``). ``python -m dashboards`` writes the generated files that the Helm
chart ships; ``python -m dashboards --check`` fails when a committed file differs from the code::

    helm/complaints-allocation/dashboards/<uid>.json   -> ConfigMaps for the Grafana sidecar
    helm/complaints-allocation/rules/alerts.yaml       -> PrometheusRule, and plain Prometheus

Every query uses only metric names from ``consumer/metrics.py``; ``queries()`` lists them all so
the end-to-end test can ask a real Prometheus for each one.
"""

from dashboards.generate import CHART_DIR, files, queries

__all__ = ["CHART_DIR", "files", "queries"]
