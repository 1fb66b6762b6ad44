"""The results store: atomic writes of finished runs, and loading them back.

Only the driver process writes. A run is written into a temporary directory that is
renamed to ``runs/<run_id>`` once every file, summary.json last, is on disk; a
directory named after a run id is therefore always complete, and leftovers of a
killed process (``.tmp-*``) are never read as results.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import math
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from initbench.results import schema


class ResultsError(Exception):
    """A results folder that cannot be read or written as asked."""


class NewerFormatError(ResultsError):
    """Results written by a newer initbench: not broken, just not readable by this one."""


class ResultsLockedError(ResultsError):
    """Another process is writing to the same experiment folder."""


@contextlib.contextmanager
def experiment_lock(exp_dir: Path) -> Iterator[None]:
    """Hold the experiment folder's lock while writing to it. The lock is an flock on
    ``.initbench.lock``: the kernel releases it when the holder exits, even by SIGKILL,
    so a crashed run never leaves the folder locked. A folder that cannot be written (a
    full disk, no permission) is a ResultsError before any run starts."""
    try:
        exp_dir.mkdir(parents=True, exist_ok=True)
        handle = (exp_dir / schema.LOCK_FILE).open("a+", encoding="utf-8")
    except OSError as exc:
        raise ResultsError(f"{exp_dir}: cannot write there ({exc.strerror})") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise ResultsLockedError(
                f"{exp_dir}: {holder} is already running a sweep into this folder; "
                "wait for it to finish (it writes every run it completes), or use another --out"
            ) from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"initbench pid {os.getpid()}")
            handle.flush()
        except OSError as exc:  # a disk that is already full
            raise ResultsError(f"{exp_dir}: cannot write there ({exc.strerror})") from None
        yield
    finally:
        handle.close()  # closing the file releases the flock


def remove_stale_temporaries(exp_dir: Path) -> int:
    """Delete leftovers of a killed writer (``runs/.tmp-*``); call only under the lock.
    Returns how many were removed."""
    runs = exp_dir / schema.RUNS_DIR
    stale = [p for p in runs.glob(f"{schema.TMP_PREFIX}*")] if runs.is_dir() else []
    stale += list(exp_dir.glob(f"{schema.TMP_PREFIX}*")) if exp_dir.is_dir() else []
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return len(stale)


_OVERRIDES_HEADER = (
    "# the --set KEY=VALUE overrides applied to spec.yaml by the latest `initbench run` that\n"
    "# trained runs into this folder, in order; each run's config.json is what it ran\n"
)

_EXPERIMENT_ENTRIES = {
    schema.SPEC_FILE,
    schema.OVERRIDES_FILE,
    schema.RUNS_DIR,
    schema.LOCK_FILE,
    schema.QUARANTINE_DIR,
}


def check_experiment_folder(exp_dir: Path) -> None:
    """Refuse to write into a folder that is not an initbench experiment folder."""
    if not exp_dir.exists():
        return
    if not exp_dir.is_dir():
        raise ResultsError(f"{exp_dir}: exists and is not a folder")
    foreign = sorted(
        p.name
        for p in exp_dir.iterdir()
        if p.name not in _EXPERIMENT_ENTRIES and not p.name.startswith(schema.TMP_PREFIX)
    )
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise ResultsError(
            f"{exp_dir}: not an initbench experiment folder (it holds {shown}); "
            "choose another --out or spec name"
        )


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _finite_or_str(value: Any) -> Any:
    """JSON has no NaN/Infinity: store non-finite floats as the strings 'nan', 'inf', '-inf'."""
    if isinstance(value, np.generic):  # np.float32 is no float subclass: would be written NaN
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {k: _finite_or_str(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_str(v) for v in value]
    return value


def to_json(data: Any) -> str:
    """Canonical JSON text (sorted keys, non-finite floats as strings)."""
    return json.dumps(
        _finite_or_str(data), indent=2, sort_keys=True, default=_json_default, allow_nan=False
    )


_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _restore_non_finite(value: Any) -> Any:
    """Inverse of :func:`_finite_or_str`: the strings 'nan', 'inf', '-inf' back to floats."""
    if isinstance(value, str):
        return _NON_FINITE.get(value, value)
    if isinstance(value, dict):
        return {k: _restore_non_finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore_non_finite(v) for v in value]
    return value


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    tmp = path.with_name(f"{schema.TMP_PREFIX}{path.name}.{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_table(path: Path, columns: Mapping[str, np.ndarray], dtypes: Mapping[str, str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = {}
    for name, dtype in dtypes.items():
        values = columns.get(name, np.array([]))
        if dtype == "str":
            arrays[name] = pa.array(np.asarray(values, dtype=object), type=pa.string())
        else:
            arrays[name] = pa.array(np.asarray(values, dtype=dtype))
    pq.write_table(pa.table(arrays), path, compression="zstd")


def run_path(exp_dir: Path, run_id: str) -> Path:
    """Folder of one run inside an experiment folder."""
    return exp_dir / schema.RUNS_DIR / run_id


def is_complete(exp_dir: Path, run_id: str) -> bool:
    """True when the run's folder exists with its summary.json."""
    return (run_path(exp_dir, run_id) / schema.SUMMARY_FILE).is_file()


def write_spec(exp_dir: Path, spec_text: str, overrides: Sequence[str] = ()) -> None:
    """Store the spec text as given, next to the runs it produced, and the ``--set``
    overrides applied to it in ``overrides.yaml`` (removed when there are none), so the
    pair always describes the latest sweep that wrote runs. Each file is written atomically.
    """
    import yaml

    (exp_dir / schema.RUNS_DIR).mkdir(parents=True, exist_ok=True)
    path = exp_dir / schema.OVERRIDES_FILE
    if overrides:
        listed = yaml.safe_dump([str(o) for o in overrides], default_flow_style=False)
        atomic_write_text(path, _OVERRIDES_HEADER + listed)
    else:
        path.unlink(missing_ok=True)
    atomic_write_text(exp_dir / schema.SPEC_FILE, spec_text)


def read_overrides(exp_dir: Path) -> list[str]:
    """The ``--set`` texts stored with the experiment's spec.yaml (empty when none, or when
    the file cannot be read as a list: it only annotates the runs, never stops a report)."""
    import yaml

    try:
        data = yaml.safe_load((exp_dir / schema.OVERRIDES_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    return [str(o) for o in data] if isinstance(data, list) else []


def write_run(exp_dir: Path, result: schema.RunResult) -> Path:
    """Write one run atomically; replaces an earlier complete run of the same id."""
    runs = exp_dir / schema.RUNS_DIR
    runs.mkdir(parents=True, exist_ok=True)
    tmp = runs / f"{schema.TMP_PREFIX}{result.run_id}.{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        (tmp / schema.CONFIG_FILE).write_text(to_json(result.config), encoding="utf-8")
        _write_table(tmp / schema.LAYERS_FILE, result.layers, schema.LAYER_COLUMNS)
        _write_table(tmp / schema.CURVES_FILE, result.curves, schema.CURVE_COLUMNS)
        _write_table(tmp / schema.SPECTRA_FILE, result.spectra, schema.SPECTRA_COLUMNS)
        (tmp / schema.SUMMARY_FILE).write_text(to_json(result.summary), encoding="utf-8")
        final = runs / result.run_id
        if final.exists():
            old = runs / f"{schema.TMP_PREFIX}old-{result.run_id}.{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
            shutil.rmtree(old)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path}: cannot read JSON ({exc})") from exc
    except RecursionError:
        raise ResultsError(f"{path}: cannot read JSON (nested too deeply)") from None
    if not isinstance(data, dict):
        raise ResultsError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def read_summary(run_dir: Path) -> dict[str, Any]:
    """Read a run's summary.json (non-finite values as floats), refusing a newer format."""
    summary = _read_json(run_dir / schema.SUMMARY_FILE)
    version = summary.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ResultsError(
            f"{run_dir / schema.SUMMARY_FILE}: missing or invalid format_version {version!r} "
            f"(expected an integer <= {schema.FORMAT_VERSION})"
        )
    if version > schema.FORMAT_VERSION:
        raise NewerFormatError(
            f"{run_dir / schema.SUMMARY_FILE}: results format version {version!r} is newer than "
            f"this initbench reads ({schema.FORMAT_VERSION}); upgrade initbench"
        )
    return _restore_non_finite(summary)


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> {dotted.key: value}."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


@dataclass
class Experiment:
    """One experiment folder loaded as four pandas tables.

    ``runs``: one row per complete run: run_id, the summary's scalar fields and the
    config flattened to dotted columns (``config.model.depth`` ...).
    ``layers``, ``curves`` and ``spectra``: the long tables of all runs with a ``run_id``
    column (``spectra``: the Jacobian singular values, none for a run of format 1).
    ``incomplete``: run folders without summary.json and leftover temporary folders.
    ``unreadable``: run id -> why it could not be read (``skip_unreadable`` only).
    ``overrides``: the ``--set`` texts stored with spec.yaml (:func:`read_overrides`).
    """

    path: Path
    name: str
    runs: Any  # pandas.DataFrame
    layers: Any  # pandas.DataFrame
    curves: Any  # pandas.DataFrame
    spectra: Any  # pandas.DataFrame
    incomplete: list[str]
    unreadable: dict[str, str] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)

    @functools.cached_property
    def grid(self) -> dict[str, list[Any]]:
        """The grid of the stored spec.yaml with the stored overrides applied, in its key
        and value order (empty when the spec cannot be read: it orders, never stops)."""
        from initbench.config.spec import SpecError, apply_overrides
        from initbench.config.yamlfile import load_checked

        path = self.path / schema.SPEC_FILE
        try:
            data, _ = load_checked(path.read_text(encoding="utf-8"), str(path))
            data = apply_overrides(data, self.overrides) if isinstance(data, dict) else data
        except (OSError, UnicodeDecodeError, SpecError):
            return {}
        grid = data.get("grid") if isinstance(data, dict) else None
        if not isinstance(grid, dict):
            return {}
        return {str(k): list(v) for k, v in grid.items() if isinstance(v, list)}


def _run_dirs(exp_dir: Path) -> tuple[list[Path], list[str]]:
    runs_root = exp_dir / schema.RUNS_DIR
    complete, incomplete = [], []
    for child in sorted(runs_root.iterdir()) if runs_root.is_dir() else []:
        if child.name.startswith(schema.TMP_PREFIX) or not child.is_dir():
            incomplete.append(child.name)
        elif (child / schema.SUMMARY_FILE).is_file():
            complete.append(child)
        else:
            incomplete.append(child.name)
    return complete, incomplete


def _read_table(path: Path) -> Any:
    import pyarrow.parquet as pq

    if not path.is_file():  # pyarrow would read a folder as a dataset of its files
        raise ResultsError(f"{path}: missing, or not a file")
    try:
        return pq.read_table(path).to_pandas()
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise ResultsError(f"{path}: cannot read Parquet table ({exc})") from exc


def _concat(frames: list[Any], columns: Mapping[str, str]) -> Any:
    """The runs' long tables as one; with no runs, an empty table that still has the columns."""
    import pandas as pd

    if frames:
        return pd.concat(frames, ignore_index=True)
    return pd.DataFrame({c: pd.Series(dtype="object") for c in ("run_id", *columns)})


def _read_spectra(run_dir: Path, version: int) -> Any:
    """The run's spectra table; a run of a format before SPECTRA_SINCE has none (empty)."""
    import pandas as pd

    if version < schema.SPECTRA_SINCE:
        return pd.DataFrame({c: pd.Series(dtype=d) for c, d in schema.SPECTRA_COLUMNS.items()})
    return _read_table(run_dir / schema.SPECTRA_FILE)


def read_run(run_dir: Path) -> tuple[dict[str, Any], Any, Any, Any]:
    """One complete run as (runs-table row, layers, curves and spectra frames), each frame
    with a ``run_id`` column; raises ResultsError naming the file that cannot be read."""
    summary = read_summary(run_dir)
    config = summary.get("config")
    if not isinstance(config, Mapping):
        raise ResultsError(f"{run_dir / schema.SUMMARY_FILE}: no 'config' mapping")
    # nested summary keys (diverged_at, versions) become dotted columns like the config's
    row = flatten({k: v for k, v in summary.items() if k != "config"})
    row.update(flatten(config, "config."))
    row["run_id"] = run_dir.name
    frames = []
    for name in (schema.LAYERS_FILE, schema.CURVES_FILE):
        frames.append(_read_table(run_dir / name))
    frames.append(_read_spectra(run_dir, summary["format_version"]))
    for frame in frames:
        frame.insert(0, "run_id", run_dir.name)
    return row, frames[0], frames[1], frames[2]


def load_experiment(exp_dir: Path | str, skip_unreadable: bool = False) -> Experiment:
    """Load every complete run of one experiment folder. A run that cannot be read raises
    ResultsError, or with ``skip_unreadable`` is left out and listed in ``unreadable``."""
    exp_dir = experiment_folder(exp_dir)
    import pandas as pd

    complete, incomplete = _run_dirs(exp_dir)
    rows, layers, curves, spectra, unreadable = [], [], [], [], {}
    for run_dir in complete:
        try:
            row, run_layers, run_curves, run_spectra = read_run(run_dir)
        except ResultsError as exc:
            if not skip_unreadable:
                raise
            unreadable[run_dir.name] = str(exc)
            continue
        rows.append(row)
        layers.append(run_layers)
        curves.append(run_curves)
        if not run_spectra.empty:  # most runs take none; concat warns on empty frames
            spectra.append(run_spectra)
    return Experiment(
        path=exp_dir,
        name=exp_dir.name,
        runs=pd.DataFrame(rows),
        layers=_concat(layers, schema.LAYER_COLUMNS),
        curves=_concat(curves, schema.CURVE_COLUMNS),
        spectra=_concat(spectra, schema.SPECTRA_COLUMNS),
        incomplete=incomplete,
        unreadable=unreadable,
        overrides=read_overrides(exp_dir),
    )


def experiment_folder(path: Path | str) -> Path:
    """``path`` as a Path, if it is one experiment folder (it has runs/); else ResultsError
    saying what it is instead: missing, a file, a folder of experiments, or neither."""
    path = Path(path)
    if not path.is_dir():
        what = "is not a folder" if path.exists() else "no such folder"
        raise ResultsError(f"{path}: {what}; expected an experiment folder")
    if not (path / schema.RUNS_DIR).is_dir():
        inside = ", ".join(p.name for p in _experiments_in(path))
        hint = f"it has no '{schema.RUNS_DIR}/'"
        if inside:
            hint = f"it holds experiment folders ({inside}): load one, or each of find_experiments"
        raise ResultsError(f"{path}: not an experiment folder; {hint}")
    return path


def _experiments_in(path: Path) -> list[Path]:
    """The experiment folders directly inside ``path``, by name."""
    return sorted(p for p in path.iterdir() if (p / schema.RUNS_DIR).is_dir())


def find_experiments(path: Path | str) -> list[Path]:
    """Experiment folders at ``path``: itself if it has runs/, else its children that do.
    Raises ResultsError when ``path`` is not a folder or holds no experiment."""
    path = Path(path)
    if not path.is_dir():
        raise ResultsError(f"{path}: no such results folder{' (a file)' * path.exists()}")
    if (path / schema.RUNS_DIR).is_dir():
        return [path]
    found = _experiments_in(path)
    if not found:
        raise ResultsError(f"{path}: no experiment folders (none has a '{schema.RUNS_DIR}/')")
    return found
