"""Running: one run (train), a sweep (runner), and where runs execute (executors)."""
