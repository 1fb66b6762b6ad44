"""``initbench report``: verdict tables (terminal, markdown, csv, json, html, latex) and plots.

Reads only stored results (:mod:`initbench.results.store`); every number comes from
:mod:`initbench.analysis`, whose definitions are printed under the tables. One section per
experiment: a header (constant config keys, run counts, incomplete and unreadable runs,
known effects), the findings, a table at initialisation (step 0), theory beside it, a
table after training with the outcome and flags, and with ``per_layer`` the
layer-by-layer statistics behind each verdict. Plots are matplotlib figures (Agg, PNG)
built from the same analysed experiments.

The modules, in the order the data flows through them:

* :mod:`~initbench.reporting.experiment`: one experiment loaded, analysed and ``--select``-ed
* :mod:`~initbench.reporting.model`: the format-neutral document (cells, tables, sections)
* :mod:`~initbench.reporting.notes`: the prose above and under the tables, known effects
* :mod:`~initbench.reporting.tables`, :mod:`~initbench.reporting.findings`: the tables
* :mod:`~initbench.reporting.figures`: the matplotlib figures
* :mod:`~initbench.reporting.render`: terminal, markdown, latex, html; csv and json
* :mod:`~initbench.reporting.output`: the document, a renderer, the files written
"""

from initbench.reporting.experiment import ExperimentReport, ReportError, build_reports
from initbench.reporting.figure_look import FIG_DPI, FIG_SIZE
from initbench.reporting.output import FORMATS, generate, sections

__all__ = [
    "FIG_DPI",
    "FIG_SIZE",
    "FORMATS",
    "ExperimentReport",
    "ReportError",
    "build_reports",
    "generate",
    "sections",
]
