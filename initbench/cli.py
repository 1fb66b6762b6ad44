"""Command-line interface: parse, call, print. No logic lives here.

Exit codes: 0 success, 1 some runs failed or diverged (``run`` only, and only with
``--strict``), 2 bad input (spec, results folder, data), 130 interrupted.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import gc
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

EXIT_BAD_INPUT = 2
EXIT_LOST = 1  # runs lost with their worker process (or --strict: runs failed or diverged)
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130, as shells report Ctrl-C
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143: timeout, scancel, docker stop
LARGE_SWEEP = 1000  # runs; more asks for confirmation (or --yes)
LIST_TOPICS = ("initializers", "activations", "datasets", "architectures", "optimizers", "metrics")


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is (finished runs kept, workers stopped) but exiting 143."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated


def _console(stderr: bool = False) -> Any:
    from initbench.ui import console

    return console(stderr)


class _Group(click.Group):
    """The command group: SIGTERM handled like Ctrl-C, and an interrupt at any moment
    (even while torch is imported) exits 130 (143 for SIGTERM) with a message, not click's
    'Aborted!' and 1."""

    def invoke(self, ctx: click.Context) -> Any:
        signal.signal(signal.SIGTERM, _terminate)
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            terminated = isinstance(exc, Terminated)
            _console(stderr=True).print("\nterminated" if terminated else "\ninterrupted")
            sys.exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED)


def _fail(message: str) -> None:
    from rich.markup import escape

    # escaped: messages hold brackets, e.g. pip install "initbench[dask]"
    _console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    sys.exit(EXIT_BAD_INPUT)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="initbench")
def main() -> None:
    """initbench: which weight initialisation keeps a network trainable, measured."""
    _freeze_objects_at_exit()


@functools.cache
def _freeze_objects_at_exit() -> None:
    # Tearing down a process that imported torch._dynamo took 1.2 s, mostly the garbage
    # collector scanning objects that die with the process anyway; freezing them when the
    # exit handlers run (output flushed, results written) leaves 0.2 s.
    atexit.register(gc.freeze)


_SET_HELP = "Override a spec key, e.g. --set train.steps=20 (repeatable; value parsed as YAML)."


@main.command()
@click.argument("spec", type=click.Path(dir_okay=True, path_type=str))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
def validate(spec: str, overrides: tuple[str, ...]) -> None:
    """Check SPEC without running it: print the runs it expands to."""
    from initbench import api
    from initbench.sweep.runner import largest_run

    with _exit_on_errors():
        loaded = api.validate(spec, overrides)
    console = _console()
    runs = f"{len(loaded.runs)} run{'s' * (len(loaded.runs) != 1)}"
    console.print(f"{spec}: ok — experiment [bold]{loaded.name}[/], {runs}")
    if loaded.grid_keys:
        console.print(f"grid: {', '.join(loaded.grid_keys)}")
    run_, needed = largest_run(loaded)
    console.print(f"memory: up to {needed.describe()} per run ({run_.run_id})", soft_wrap=True)


def _threshold_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``initbench report``'s threshold options, one per field of Thresholds, with its
    default and help text (so neither is written twice)."""
    from initbench.config.thresholds import THRESHOLD_HELP, Thresholds

    for field in reversed(dataclasses.fields(Thresholds)):
        flag = "--" + field.name.replace("_", "-")
        option = click.option(
            flag,
            type=float,
            default=field.default,
            show_default=True,
            help=THRESHOLD_HELP[field.name],
        )
        command = option(command)
    return command


_EXECUTOR_HELP = (
    "Where runs execute: local processes; a Dask cluster (--scheduler, or a local one); or "
    'Slurm jobs. dask and slurm need the extra: pip install "initbench[dask]".'
)


def _executor_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The executor options of ``run`` (see initbench.sweep.executors.OPTION_EXECUTORS)."""
    options = [
        click.option(
            "--executor",
            type=click.Choice(["local", "dask", "slurm"]),
            default="local",
            show_default=True,
            help=_EXECUTOR_HELP,
        ),
        click.option(
            "--workers",
            type=click.IntRange(min=1),
            default=None,
            help="Runs in parallel: local processes, or the local Dask cluster's workers "
            "[default: one per core, 1 for a short sweep; dask: cores / --cpus-per-run].",
        ),
        click.option(
            "--threads",
            type=click.IntRange(min=1),
            default=None,
            help="local: torch threads per run [default: 1].",
        ),
        click.option(
            "--scheduler",
            metavar="ADDRESS",
            default=None,
            help="dask: a running scheduler, e.g. tcp://host:8786 [default: start a local "
            "cluster].",
        ),
        click.option(
            "--cpus-per-run",
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            help="dask, slurm: torch threads of each run, and the cores it holds.",
        ),
        click.option(
            "--retries",
            type=click.IntRange(min=0),
            default=2,
            show_default=True,
            help="Times a run lost with its worker (killed for memory, say) is resubmitted "
            "before it is recorded failed.",
        ),
        click.option(
            "--jobs",
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            help="slurm: jobs to submit; each is one Dask worker that does runs one by one.",
        ),
        click.option(
            "--partition", default=None, help="slurm: partition [default: the cluster's]."
        ),
        click.option(
            "--walltime", default="01:00:00", show_default=True, help="slurm: time limit per job."
        ),
        click.option("--memory", default="4GB", show_default=True, help="slurm: memory per job."),
        click.option("--account", default=None, help="slurm: account to charge."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@main.command()
@click.argument("spec", type=click.Path(dir_okay=True, path_type=str))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("results"),
    show_default=True,
    help="Results folder; runs go to OUT/<spec name>/runs/<run_id>/.",
)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
@_executor_options
@click.option(
    "--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu", show_default=True
)
@click.option("--force", is_flag=True, help="Redo runs that are already complete.")
@click.option(
    "--strict",
    is_flag=True,
    help="Exit 1 if any run of the spec failed or diverged, in this sweep or skipped as "
    "complete from an earlier one.",
)
@click.option("--yes", is_flag=True, help=f"Run a sweep of more than {LARGE_SWEEP} runs unasked.")
@click.pass_context
def run(
    ctx: click.Context,
    spec: str,
    out: Path,
    overrides: tuple[str, ...],
    device: str,
    force: bool,
    strict: bool,
    yes: bool,
    **executor: Any,
) -> None:
    """Train every run of SPEC, recording per-layer statistics under --out."""
    from initbench import api
    from initbench.ui import CliSweep, print_sweep_summary

    given = {k: v for k, v in executor.items() if _given(ctx, k)}
    console = _console()
    sweep = CliSweep(console, yes, _confirm_size, executor["retries"])
    with _exit_on_errors(sweep):
        outcome = api.run(
            spec,
            out,
            overrides,
            given.pop("workers", None),
            device=device,
            force=force,
            hooks=sweep.hooks(),
            **given,
        )
    print_sweep_summary(console, outcome)
    if outcome.lost:
        _console(stderr=True).print(
            f"{len(outcome.lost)} run(s) lost their worker at every attempt and are recorded "
            f"failed: {', '.join(outcome.lost)}; see their error, and redo them with --force",
            soft_wrap=True,
        )
        sys.exit(EXIT_LOST)
    if strict and outcome.unsuccessful():
        _strict_exit(outcome)


def _given(ctx: click.Context, name: str) -> bool:
    """Whether the option was given on the command line (not left at its default)."""
    return ctx.get_parameter_source(name) is not ParameterSource.DEFAULT


def _strict_exit(outcome: Any) -> None:
    """--strict: say how many runs failed or diverged (skipped ones included), exit 1."""
    total = len(outcome.unsuccessful())
    skipped = total - len(outcome.unsuccessful(skipped=False))
    among = f", {skipped} of them already complete from an earlier sweep" if skipped else ""
    _console(stderr=True).print(
        f"--strict: {total} run(s) failed or diverged{among}", markup=False, soft_wrap=True
    )
    sys.exit(EXIT_LOST)


@contextlib.contextmanager
def _exit_on_errors(sweep: Any = None) -> Iterator[None]:
    """Bad input (spec, data, executor options, results folder) exits 2 with its message;
    Ctrl-C during a sweep exits 130, saying where the finished runs are."""
    from initbench.config.spec import SpecError
    from initbench.data import DataError
    from initbench.results.store import ResultsError
    from initbench.sweep.executors import ExecutorError

    try:
        yield
    except SpecError as exc:
        _console(stderr=True).print(str(exc), markup=False, soft_wrap=True)
        sys.exit(EXIT_BAD_INPUT)
    except (DataError, ExecutorError, ResultsError) as exc:
        _fail(str(exc))
    except KeyboardInterrupt as exc:
        if sweep is None or sweep.folder is None:
            raise
        terminated = isinstance(exc, Terminated)
        _console(stderr=True).print(
            f"\n{'terminated' if terminated else 'interrupted'}: finished runs are kept in "
            f"{sweep.folder}; run the same command again to do only what is missing.",
            soft_wrap=True,
        )
        sys.exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED)


def _confirm_size(todo: Sequence[Any], yes: bool) -> None:
    """Ask before a sweep of more than LARGE_SWEEP runs (refuse without a terminal)."""
    if len(todo) <= LARGE_SWEEP or yes:
        return
    from initbench.sweep.runner import estimated_seconds

    steps = sum(run.train.steps for run in todo)
    hours = sum(estimated_seconds(run) for run in todo) / 3600
    message = (
        f"{len(todo)} runs to do, {steps:,} optimizer steps in all "
        f"(about {hours:.1f} h of training on one core, estimated from the networks' sizes)"
    )
    if not sys.stdin.isatty():
        _fail(f"{message}; pass --yes to run it")
    if not click.confirm(f"{message}. Run it?", default=False):
        sys.exit(EXIT_BAD_INPUT)


@main.command(name="list")
@click.argument("topic", type=click.Choice(LIST_TOPICS), required=False)
def list_(topic: str | None) -> None:
    """List initializers, activations, datasets, architectures, optimizers or metrics."""
    from initbench.ui import print_catalog

    for name in [topic] if topic else LIST_TOPICS:
        print_catalog(_console(), name)


@main.command()
@click.argument("results_dir", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    default="terminal",
    show_default=True,
    type=click.Choice(["terminal", "markdown", "csv", "json", "html", "latex"]),
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Write the report to this file instead of stdout.",
)
@click.option(
    "--plots",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Also write every figure as PNG into this folder.",
)
@click.option("--per-layer", is_flag=True, help="Add the layer-by-layer tables behind verdicts.")
@click.option(
    "--select",
    multiple=True,
    metavar="KEY=VALUE",
    help="Only configurations with this config value, e.g. model.depth=30 (repeatable).",
)
@_threshold_options
@click.option(
    "--rows",
    metavar="KEY",
    default=None,
    help="The Answer's rows, e.g. model.depth [default: the numeric varying key with most values].",
)
@click.option(
    "--cols",
    metavar="KEY",
    default=None,
    help="The Answer's columns, e.g. model.init [default: the categorical varying key "
    "with most values].",
)
def report(
    results_dir: Path,
    fmt: str,
    out: Path | None,
    plots: Path | None,
    per_layer: bool,
    select: tuple[str, ...],
    rows: str | None,
    cols: str | None,
    **thresholds: float,
) -> None:
    """The Answer, verdict tables (and plots) of the runs under RESULTS_DIR."""
    from initbench.config.thresholds import Thresholds
    from initbench.reporting import ReportError, generate
    from initbench.results import store

    try:
        written = generate(
            results_dir,
            fmt=fmt,
            out=out,
            plots=plots,
            per_layer=per_layer,
            select=select,
            thresholds=Thresholds(**thresholds),  # the threshold options are its fields
            rows=rows,
            cols=cols,
        )
    except (store.ResultsError, ReportError, ValueError) as exc:
        _fail(str(exc))
    for path in written:
        click.echo(f"wrote {path}", err=True)


_THEORY_HELP = {  # the theory options beyond the per-layer prediction's
    "activation": "Activation as a spec writes it: tanh, or '{name: elu, alpha: 0.5}'.",
    "init": "Initializer as a spec writes it: normal, or '{name: normal, std: 0.1}'.",
    "param": "A parameter of --init, e.g. std=0.1 (repeatable).",
    "sigma_w2": "sigma_w^2 = fan_in Var(W) directly (with --init, they must agree).",
    "depth": "Predict each layer of a net this deep [default: the fixed point only].",
    "width": "Hidden width: with --depth, and for a fixed-std init (sigma_w^2 = width std^2).",
    "phase_diagram": "Write the (sigma_w^2, sigma_b^2) phase diagram into --out.",
    "out": "--phase-diagram: the folder for its tables (CSV) and figure (PNG).",
    "results": "--phase-diagram: runs to draw beside depth = 6 xi_c.",
    "resolution": "--phase-diagram: points per axis [default: meanfield.phase.RESOLUTION].",
}


@main.command("theory")
@click.option("--activation", required=True, help=_THEORY_HELP["activation"])
@click.option("--init", "init", default=None, help=_THEORY_HELP["init"])
@click.option("--param", "params", multiple=True, metavar="K=V", help=_THEORY_HELP["param"])
@click.option("--sigma-w2", type=float, default=None, help=_THEORY_HELP["sigma_w2"])
@click.option("--sigma-b2", type=click.FloatRange(min=0), default=0.0, show_default=True)
@click.option("--depth", type=click.IntRange(min=1), default=None, help=_THEORY_HELP["depth"])
@click.option("--width", type=click.IntRange(min=1), default=None, help=_THEORY_HELP["width"])
@click.option(
    "--arch",
    type=click.Choice(["mlp", "cnn", "rnn", "lstm", "gru"]),
    default="mlp",
    show_default=True,
)
@click.option(
    "--q1",
    type=float,
    default=None,
    help="Layer-1 preact second moment [default: from standardised inputs].",
)
@click.option("--batchnorm/--no-batchnorm", default=False, show_default=True)
@click.option("--recurrent-init", default=None, help="rnn only, as --init [default: --init].")
@click.option("--padding-correction/--no-padding-correction", default=True, show_default=True)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["terminal", "markdown", "csv", "json"]),
    default="terminal",
    show_default=True,
)
@click.option("--phase-diagram", is_flag=True, help=_THEORY_HELP["phase_diagram"])
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help=_THEORY_HELP["out"])
@click.option("--results", type=click.Path(path_type=Path), help=_THEORY_HELP["results"])
@click.option("--resolution", type=click.IntRange(min=2), help=_THEORY_HELP["resolution"])
def theory_cmd(**options: Any) -> None:
    """Mean-field theory without training: the fixed point, phase and depth scales (q*,
    c*, chi_1, chi_c, xi_q, xi_c) of an activation and init; with --depth, every layer;
    with --phase-diagram, the order-to-chaos plane."""
    from initbench.config.problems import SpecError
    from initbench.meanfield import TheoryError
    from initbench.reporting.phase import theory_command
    from initbench.results.store import ResultsError

    ctx = click.get_current_context()
    given = {n for n in options if ctx.get_parameter_source(n) != ParameterSource.DEFAULT}
    try:
        text, written = theory_command(given, **options)
    except (TheoryError, SpecError, ResultsError) as exc:
        _fail(str(exc))
    for path in written:
        click.echo(f"wrote {path}", err=True)
    click.echo(text, nl=False)


@main.group()
def data() -> None:
    """Dataset files: fetch the full MNIST-like datasets, show the cache folder."""


@data.command("fetch")
@click.argument("name", type=click.Choice(["mnist", "fashion_mnist", "kmnist"]))
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder to download into [default: the cache folder].",
)
@click.option(
    "--mirror",
    "mirrors",
    multiple=True,
    metavar="URL",
    help="Base URL to try instead of the built-in mirrors (repeatable).",
)
def data_fetch(name: str, root: Path | None, mirrors: tuple[str, ...]) -> None:
    """Download NAME's four IDX files, verify their checksums, store them atomically."""
    from initbench.data import DataError, fetch

    try:
        folder = fetch(name, root, mirrors=list(mirrors) or None, log=click.echo)
    except DataError as exc:
        _fail(str(exc))
    click.echo(f"{name}: files ready in {folder}")


@data.command("dir")
def data_dir() -> None:
    """Print the cache folder (set INITBENCH_CACHE_DIR to move it)."""
    from initbench.data import cache_dir

    click.echo(str(cache_dir()))


if __name__ == "__main__":
    main()
