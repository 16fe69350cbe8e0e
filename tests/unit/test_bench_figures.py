"""The benchmarks' verdicts (bench/figures.py, bench/common.py): a ratio paired round by round
with the same round's baseline, targets on the ratio or on the value, and a round without a
ratio said, not dropped silently."""

from __future__ import annotations

import argparse
import math
import shutil
from collections.abc import Iterator

import pytest

from bench.common import Bench
from bench.figures import Figure, Target, paired_ratios


@pytest.fixture
def bench() -> Iterator[Bench]:
    b = Bench("unit", "the verdicts", argparse.Namespace(quick=True), rounds=3)
    yield b
    shutil.rmtree(b.workdir, ignore_errors=True)


def test_ratios_pair_each_round_with_its_own_baseline(bench):
    # The ratio of the medians would be 20 / 10 = 2: the rounds' own ratios say 1.
    fig = bench.paired("writes", "ms", [10.0, 20.0, 30.0], [10.0, 5.0, 60.0], "no sync")
    assert (fig.value, fig.baseline, fig.baseline_name) == (20.0, 10.0, "no sync")
    assert (fig.ratio, fig.ratio_low, fig.ratio_high) == (1.0, 0.5, 4.0)
    assert bench.notes == [] and fig.note == ""


def test_a_round_with_a_zero_baseline_is_reported_not_dropped_silently(bench):
    fig = bench.paired("writes", "ms", [10.0, 20.0, 30.0], [5.0, 0.0, 10.0], "no sync")
    assert (fig.ratio, fig.ratio_low, fig.ratio_high) == (2.5, 2.0, 3.0)
    said = "writes: no ratio for round(s) 2 (baseline 0 or less, or not measured)"
    assert fig.note == said and bench.notes == [said]
    assert fig.as_json()["note"] == said


def test_a_negative_baseline_has_no_ratio(bench):
    # An added latency lost in the noise (-19 µs) is no baseline to divide by.
    fig = bench.paired(
        "added", "µs", [104.0, 90.0], [-19.0, 60.0], "the floor's", Target("<=", 1.5)
    )
    assert (fig.ratio, fig.ratio_low, fig.ratio_high) == (1.5, 1.5, 1.5)
    assert fig.note == "added: no ratio for round(s) 1 (baseline 0 or less, or not measured)"


def test_percentile_ratios_keep_the_rounds_aligned_past_an_empty_one(bench):
    fig = bench.percentile(
        "lateness p50", "ms", 0.5, [[1.0, 2.0, 3.0], [], [4.0, 5.0, 6.0]], [[1.0], [1.0], [2.0]]
    )
    # Round 3's p50 (5) against round 3's baseline (2), not round 2's (1).
    assert (fig.ratio_low, fig.ratio_high) == (2.0, 2.5)
    assert fig.samples == [2.0, 5.0]
    assert bench.notes == [
        "lateness p50: no ratio for round(s) 2 (baseline 0 or less, or not measured)"
    ]


def test_paired_ratios_refuse_rounds_that_do_not_match():
    assert paired_ratios([2.0, math.nan, 9.0], [1.0, 1.0, 3.0]) == ([2.0, 3.0], [2])
    with pytest.raises(ValueError):
        paired_ratios([1.0, 2.0], [1.0])


@pytest.mark.parametrize(
    ("target", "ratio", "value", "met"),
    [
        (Target(">=", 0.95), 0.95, 10.0, True),  # the bound itself meets it
        (Target(">=", 0.95), 0.94, 1e9, False),  # on the ratio: the value does not count
        (Target("<=", 2.0), 2.0, 0.0, True),
        (Target("<=", 2.0), 2.01, 0.0, False),
        (Target("<=", 50.0, on="value"), 99.0, 50.0, True),  # on the value: the ratio does not
        (Target("<=", 50.0, on="value"), 0.1, 50.5, False),
        (Target(">=", 1000.0, on="value"), None, 999.0, False),
        (Target(">=", 0.95), None, 10.0, None),  # no ratio measured: no verdict
        (Target(">=", 0.95), math.nan, 10.0, None),
    ],
)
def test_a_target_judges_the_ratio_or_the_value(target, ratio, value, met):
    fig = Figure("f", "ms", value, ratio=ratio, target=target)
    assert fig.met is met
    assert fig.as_json()["met"] is met


def test_a_figure_without_target_has_no_verdict():
    assert Figure("f", "ms", 1.0, ratio=1.0).met is None


def test_targets_read_as_they_judge():
    assert Target(">=", 0.95).text("ms") == "≥ 0.95× baseline"
    assert Target("<=", 50.0, on="value").text("ms") == "≤ 50.0 ms"
