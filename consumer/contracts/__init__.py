"""Message contracts (DESIGN section 2): JSON Schema files are the source of truth; the typed models
in ``messages`` mirror them and ``tests/unit/test_contracts.py`` checks that both agree on
examples."""

from consumer.contracts.messages import (
    Allocation,
    Complaint,
    Feedback,
    ModelRef,
    Prediction,
    Scored,
    ShadowResult,
    Source,
    StrategyRef,
)

__all__ = [
    "Allocation",
    "Complaint",
    "Feedback",
    "ModelRef",
    "Prediction",
    "Scored",
    "ShadowResult",
    "Source",
    "StrategyRef",
]
