"""The command line restates no fact: its choices and defaults are the library's."""

from __future__ import annotations

import dataclasses

import click

from initbench.cli import main


def _options(command: str) -> dict[str, click.Parameter]:
    return {p.name: p for p in main.commands[command].params if p.name}


def test_run_executor_defaults_are_the_executors_own() -> None:
    from initbench.sweep.executors import ExecutorOptions

    options = _options("run")
    for field in dataclasses.fields(ExecutorOptions):
        assert options[field.name].default == field.default, field.name


def test_report_threshold_defaults_are_the_analysis_defaults() -> None:
    from initbench.analysis import Thresholds

    options = _options("report")
    for field in dataclasses.fields(Thresholds):
        assert options[field.name].default == field.default, field.name


def test_theory_arch_choices_are_the_registered_architectures() -> None:
    from initbench.config.architectures import ARCHITECTURES

    assert list(_options("theory").get("arch").type.choices) == ARCHITECTURES.names()


def test_fetchable_datasets_are_the_idx_sources() -> None:
    from initbench.data.idx import IDX_SOURCES

    fetch = {p.name: p for p in main.commands["data"].commands["fetch"].params}
    assert list(fetch["name"].type.choices) == list(IDX_SOURCES)
