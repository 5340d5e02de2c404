"""complaints-allocation runtime core: contracts, registry, strategy, inference, the loop, metrics.

``explainer`` and ``trainer`` import from here, never the reverse (DESIGN section 1).
"""

__version__ = "0.1.0"
