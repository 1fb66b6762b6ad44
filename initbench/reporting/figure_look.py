"""How the report's figures draw an experiment: their size, which varying key is the
main axis, which the colour and which the line style (:func:`roles`, :class:`Look`), and
the figure objects they hand on (:class:`Drawn`, :class:`Plot`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import numpy as np

from initbench.analysis import format_value
from initbench.reporting.experiment import ExperimentReport

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FIG_SIZE: Final = (10.0, 5.0)  # inches; at FIG_DPI every PNG is 1000 x 500 pixels
FIG_DPI: Final = 100
BAND_NOTE: Final = "line: mean over the seeds; band: their min..max"
THEORY_STYLE: Final = {"linestyle": "--", "linewidth": 1.2}  # the mean-field prediction
THEORY_LABEL: Final = "dashed: mean-field theory"
LINESTYLES: Final = ("-", ":", "-.", (0, (6, 2, 1, 2, 1, 2)))  # "--" is theory's
MARKERS: Final = (".", "x", "+", "^", "s", "v")
TIME_AXIS: Final = "time step t (top layer)"
HEADLINE: Final = {"x": 0.01, "ha": "left"}  # clear of the legends at the top right
SUMMED: Final = "summed over map positions, as the verdict fits it"


class Drawn(NamedTuple):
    """A figure with the title a table of contents shows and the caption under it."""

    fig: Figure
    title: str
    caption: str


@dataclass(frozen=True)
class Plot:
    """One rendered figure: its title, caption and PNG bytes (FIG_SIZE at FIG_DPI)."""

    title: str
    caption: str
    png: bytes


# --- which key is drawn how -------------------------------------------------------------------


def is_numeric(values: Sequence[Any]) -> bool:
    """Whether every value is a number (not a bool): such a key can be an axis."""
    return all(
        isinstance(v, int | float | np.number) and not isinstance(v, bool | np.bool_)
        for v in values
    )


def values_of(rep: ExperimentReport, key: str) -> list[Any]:
    """The key's distinct values among the selected configurations, in table (rank) order."""
    assert rep.keys is not None
    return sorted(dict.fromkeys(rep.configs[key].tolist()), key=rep.keys.ranks[key].get)


def roles(rep: ExperimentReport) -> tuple[str | None, list[str]]:
    """(main axis, the other varying keys, compared key first). The main axis is the
    numeric key with the most values (e.g. ``model.depth``); the others follow the spec's
    grid order, so the compared key is the grid's other key (e.g. ``model.init``)."""
    if rep.keys is None:
        return None, []
    grid = list(rep.experiment.grid)
    keys = sorted(
        rep.keys.varying,
        key=lambda k: next((i for i, g in enumerate(grid) if g == k or g.startswith(f"{k}.")), 99),
    )
    numeric = [k for k in keys if is_numeric(values_of(rep, k))]
    main = max(numeric, key=lambda k: len(values_of(rep, k)), default=None)
    return main, [k for k in keys if k != main]


def _style(index: int) -> dict[str, Any]:
    return {
        "linestyle": LINESTYLES[index % len(LINESTYLES)],
        "marker": MARKERS[index % len(MARKERS)],
    }


class Look:
    """Colour by one key (sequential for numbers, categorical otherwise), line style and
    marker by the combination of the others; and the legends that say so."""

    def __init__(self, rep: ExperimentReport, colour: str | None, styled: Sequence[str]) -> None:
        from matplotlib import colormaps

        self.colour_key, self.styled = colour, list(styled)
        values = values_of(rep, colour) if colour else []
        if len(values) > 1 and is_numeric(values):
            cmap = colormaps["viridis"]
            self.colours = {v: cmap(0.85 * i / (len(values) - 1)) for i, v in enumerate(values)}
        else:
            self.colours = {v: colormaps["tab10"].colors[i % 10] for i, v in enumerate(values)}
        ranks = rep.keys.ranks if rep.keys else {}
        combos = {tuple(r[k] for k in self.styled) for r in rep.config_rows}
        ranked = sorted(combos, key=lambda c: [ranks[k][v] for k, v in zip(styled, c, strict=True)])
        self.combos = {combo: i for i, combo in enumerate(ranked)}

    def of(self, row: Any) -> dict[str, Any]:
        """Matplotlib keywords (color, linestyle, marker) of one configuration's row."""
        colour = self.colours.get(row[self.colour_key], "0.2") if self.colour_key else "C0"
        return {"color": colour, **_style(self.combos.get(tuple(row[k] for k in self.styled), 0))}

    def legends(self, fig: Figure, extra: Sequence[tuple[Any, str]] = ()) -> None:
        """Right of the data: the colours (titled with their key) and ``extra`` entries;
        below them the line styles (titled with their keys) where there are several."""
        from matplotlib.lines import Line2D

        entries = [(Line2D([], [], color=c), format_value(v)) for v, c in self.colours.items()]
        entries += list(extra)
        small = {"fontsize": "small", "title_fontsize": "small"}
        if entries:
            handles, labels = zip(*entries, strict=True)
            fig.legend(handles, labels, loc="outside right upper", title=self.colour_key, **small)
        if len(self.combos) > 1:
            styles = [
                (Line2D([], [], color="0.3", **_style(i)), ", ".join(map(format_value, combo)))
                for combo, i in self.combos.items()
            ]
            handles, labels = zip(*styles, strict=True)
            title = ", ".join(self.styled)
            fig.legend(handles, labels, loc="outside right lower", title=title, **small)

    def says(self) -> str:
        """'colour: model.init; line style: model.depth' for a caption."""
        parts = [f"colour: {self.colour_key}"] if self.colour_key else []
        return "; ".join(parts + ([f"line style: {', '.join(self.styled)}"] if self.styled else []))


def profile_look(rep: ExperimentReport) -> Look:
    """Per-configuration lines: colour by the compared key, style by the rest (main last)."""
    main, others = roles(rep)
    keys = [*others, main] if main else others
    return Look(rep, keys[0] if keys else None, keys[1:])


def new_figure(nrows: int = 1, ncols: int = 1, **kwargs: Any) -> tuple[Figure, np.ndarray]:
    """A FIG_SIZE figure (constrained layout) and its grid of axes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIG_SIZE, dpi=FIG_DPI, layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kwargs)
