"""Metrics: counted when they are on; nothing kept or printed when they are off (the local stack, tests)."""

from __future__ import annotations

import json

import pytest

from batchdrop.observability import Metric, count, metrics


def test_with_metrics_off_nothing_is_kept_or_printed_however_many_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given metrics switched off, as the local stack and the tests have them
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    metrics.clear_metrics()

    # When more poll runs count than a metric holds values (Powertools prints a full set of 100 values)
    for _ in range(250):
        count(Metric.POLL_ERRORS, 0)

    # Then nothing was kept, and no line of EMF reached the output
    assert metrics.metric_set == {}
    assert "_aws" not in capsys.readouterr().out


def test_with_metrics_on_each_count_is_in_the_flushed_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    metrics.clear_metrics()
    count(Metric.JOBS_ACCEPTED)
    count(Metric.JOBS_ACCEPTED)
    metrics.flush_metrics()
    (line,) = [line for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert json.loads(line)["JobsAccepted"] == [1.0, 1.0]
