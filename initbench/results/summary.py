"""summary.json of one run, built in one place for every way a run ends.

A run that trained (ok, diverged, failed inside the loop) and a run that never reported
back (its worker was lost) get the same keys: every :data:`schema.SUMMARY_KEYS` key,
``None`` where it does not apply, so readers see one shape whatever happened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from initbench.results import schema

if TYPE_CHECKING:
    from initbench.config.spec import RunConfig


def make_summary(config: RunConfig, experiment: str, **values: Any) -> dict[str, Any]:
    """The summary of one run of ``config`` in ``experiment``: every SUMMARY_KEYS key, in
    that order. The keys that follow from the config (format_version, run_id,
    steps_planned, config) are filled in; ``values`` sets the others (status, timings,
    ...), and the rest are None. Raises KeyError for a key SUMMARY_KEYS does not declare."""
    unknown = sorted(set(values) - set(schema.SUMMARY_KEYS))
    if unknown:
        raise KeyError(f"not summary keys (see schema.SUMMARY_KEYS): {', '.join(unknown)}")
    summary: dict[str, Any] = dict.fromkeys(schema.SUMMARY_KEYS)
    summary.update(
        format_version=schema.FORMAT_VERSION,
        run_id=config.run_id,
        experiment=experiment,
        steps_planned=config.train.steps,
        config=config.as_dict(),
    )
    summary.update(values)
    return summary
