"""The explainer (DESIGN section 7): token-level SHAP for one past decision, on the exact model
package (by digest) and input (by sha256) that made it; JSON for machines, HTML for people, over an
authenticated HTTP API.

Modules, from the bottom up: ``errors`` (the explainer's branch of the exception tree and its HTTP
mapping), ``tokens`` (what the model saw, for shap's masker), ``attribution`` (SHAP), ``models``
(registry lookup and digest check), ``sources`` (records by coordinates), ``index`` (decision id →
allocation), ``limits`` (cache and slots), ``service`` (one request), ``report`` and ``html`` (the
outputs), ``openapi`` (the API's types, from which FastAPI generates its document), ``auth`` (the
bearer-token dependency), ``audit`` (the audit line, an ASGI middleware), ``api`` (the FastAPI
application) and ``http`` (uvicorn in a thread), ``app`` and ``cli`` (wiring). Imports
``consumer``; nothing imports ``explainer`` but the CLI.
"""
