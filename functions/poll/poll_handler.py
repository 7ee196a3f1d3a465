"""Poll function: runs on a schedule; moves due shards forward (submit, refresh, hand to collect)."""

from __future__ import annotations

import dataclasses
from typing import Any

from batchdrop.flow.polling import poll_once
from batchdrop.observability import Metric, count, logger, metrics, tracer
from batchdrop.runtime import build_services
from batchdrop.settings import load_settings


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    services = build_services(load_settings("poll"), context)
    try:
        summary = poll_once(services)
    finally:
        services.close()
    # An idle run (nothing due, nothing moved) is logged at DEBUG: one a minute adds up, and says nothing.
    idle = not (summary.due or summary.handed_over or summary.finalize_requests or summary.errors)
    (logger.debug if idle else logger.info)("poll run", extra=dataclasses.asdict(summary))
    count(Metric.POLL_ERRORS, len(summary.errors))
    return {
        "due": summary.due,
        "polled": summary.polled,
        "ended": summary.ended,
        "timed_out": summary.timed_out,
        "handed_over": summary.handed_over,
        "errors": len(summary.errors),
    }
