"""Per-layer statistics of probed steps: what is measured and how it is reduced."""
