"""Brock et al. 2021's signal propagation plot of a residual net at initialisation: per
block, the stream's average channel squared mean and average channel variance, and the
residual branch's average channel variance (catalogue: stream_chan_sq_mean,
stream_chan_var, branch_chan_var), with the stream's gradient variance beside them."""

from __future__ import annotations

from initbench.reporting.experiment import ExperimentReport
from initbench.reporting.figure_look import BAND_NOTE, HEADLINE, Drawn, new_figure, profile_look

PANELS = (
    ("stream_chan_sq_mean", "stream: avg channel squared mean"),
    ("stream_chan_var", "stream: avg channel variance"),
    ("branch_chan_var", "branch: avg channel variance"),
    ("grad_stream_var", "stream's gradient variance"),
)


def signal_propagation_figure(rep: ExperimentReport) -> Drawn | None:
    """The four panels against the block's last layer at step 0, log scale, one line per
    configuration; None without residual runs."""
    from initbench.reporting.figures import _has_unit, _profile_panel, _theory_entry

    if not _has_unit(rep, "stream_chan_var", "layer"):
        return None
    fig, axes = new_figure(2, 2)
    look, theory = profile_look(rep), False
    for ax, (metric, what) in zip(axes.flat, PANELS, strict=True):
        theory = _profile_panel(ax, rep, look, metric, "layer") or theory
        ax.set_title(what, fontsize=8)
        ax.set_xlabel("layer l ending the block", fontsize=8)
        ax.set_ylabel(metric)
    title = "Signal propagation plot (Brock et al. 2021) at step 0"
    fig.suptitle(f"{rep.name}: {title}\n{BAND_NOTE}", **HEADLINE)
    look.legends(fig, _theory_entry() if theory else [])
    caption = (
        "per residual block at step 0: the stream's average over channels of its mean over "
        "the batch squared and of its variance over the batch (they add up to stream_sq), "
        "the branch's average channel variance, and the stream's gradient variance; log "
        f"scale; one line per configuration ({look.says()}); {BAND_NOTE}."
    )
    return Drawn(fig, title, caption)
