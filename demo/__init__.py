"""``make demo``: the whole lifecycle of complaints-allocation on the embedded local stack."""
