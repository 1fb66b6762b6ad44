"""Per-layer statistics of probed steps: what is measured (the catalogue) and how it is
reduced. Importing the package imports nothing heavy: ``initbench list`` reads the
catalogue without torch."""
