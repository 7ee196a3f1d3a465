"""What users and other services read: report.json and the event details, each built here and only here.

The JSON Schemas published in events/schemas/ describe the same documents; tests/unit/test_contracts.py
holds each model against its schema (every field named there, every required one always written). Fields
are added, never renamed (`schema_version` 1).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer

from batchdrop import estimate
from batchdrop.models import (
    InputInfo,
    Job,
    JobProgress,
    JobStatus,
    LineCounts,
    Outcome,
    RequestCounts,
    Shard,
    TokenUsage,
    add_count,
)
from batchdrop.pricing import DEFAULT_PRICES, PriceTable
from batchdrop.validation import Problem

SCHEMA_VERSION: Literal[1] = 1
MAX_REPORTED_BATCHES = 1000
_MAX_ECHOED_REQUEST_CHARS = 8192


def iso(epoch: int | None) -> str | None:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z") if epoch is not None else None


class _Document(BaseModel):
    """A published document: no field but the declared ones; the optional ones in OMITTED_WHEN_NONE are
    left out when they have no value (the rest are written, null or not)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    OMITTED_WHEN_NONE: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _leave_out_absent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for name in self.OMITTED_WHEN_NONE:
            if data.get(name) is None:
                data.pop(name, None)
        return data

    def document(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class Counts(_Document):
    total: int
    succeeded: int
    failed: int


class Outputs(_Document):
    OMITTED_WHEN_NONE = frozenset({"output", "errors", "results_csv"})

    output: str | None = None
    errors: str | None = None
    report: str
    results_csv: str | None = None


class Timestamps(_Document):
    received_at: str | None
    submitted_at: str | None
    finished_at: str | None


class BatchFailure(_Document):
    code: str
    message: str | None


class BatchEntry(_Document):
    OMITTED_WHEN_NONE = frozenset({"round"})

    batch_id: str | None
    status: str | None
    request_counts: RequestCounts | None
    input_file_id: str | None
    output_file_id: str | None
    error_file_id: str | None
    shard: int
    lines: int
    first_line: int
    failure: BatchFailure | None
    round: int | None = None
    """The re-drive round the batch belongs to (left out for the first round)."""


class RoundSummary(_Document):
    """One round of a job: the first submission (0), then each re-drive of failed lines."""

    round: int
    batches: int
    lines: int
    succeeded: int
    failed: int
    errors_by_code: dict[str, int]
    redriven: int
    """Of its failed lines, how many the next round sent again."""


class Recovery(_Document):
    """What re-driving failed lines did for a job, over all its rounds."""

    rounds: list[RoundSummary]
    attempts: dict[str, int]
    """Lines by the attempt that gave their final result ("1": right the first time)."""
    retried: int
    """Lines sent again (a line sent in two re-drives counts twice)."""
    recovered: int
    """Lines that failed first and succeeded on a later attempt."""


class Tokens(_Document):
    lines: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int


class Usage(_Document):
    """The tokens of the succeeded lines, each counted for the attempt that answered it (over every
    round), in total and by the model that answered; `wasted`: tokens reported on failed lines."""

    total: Tokens
    by_model: dict[str, Tokens]
    wasted: Tokens


class Cost(_Document):
    """`usage` at the price table's prices; null for a model the table does not know, and a null total
    when it knows none of them (`unpriced_models` names those left out of the total)."""

    currency: str
    total: float | None
    by_model: dict[str, float | None]
    unpriced_models: list[str]
    prices_as_of: str


class TokenEstimateEntry(_Document):
    lines: int
    input_tokens: int
    max_output_tokens: int
    lines_without_max_tokens: int
    """Lines that set no max_tokens: their output has no bound, so only their input is in `cost`."""


class EstimatedCost(_Document):
    currency: str
    total: float | None
    """Input plus worst-case output of the priced models (null when none is priced)."""
    by_model: dict[str, float | None]
    unpriced_models: list[str]
    prices_as_of: str
    limit: float | None
    """MaxEstimatedCostPerJob (null: no limit)."""


class Estimate(_Document):
    """What the split estimated before any batch was created (estimate.py), beside `usage` and `cost`."""

    method: str
    total: TokenEstimateEntry
    by_model: dict[str, TokenEstimateEntry]
    cost: EstimatedCost


class ValidationProblem(_Document):
    OMITTED_WHEN_NONE = frozenset({"fix"})

    line: int | None
    code: str
    message: str
    fix: str | None = None
    """What to change, with what was found."""


class Report(_Document):
    """outbox/<name>/report.json"""

    OMITTED_WHEN_NONE = frozenset(
        {
            "batch_count",
            "batches_truncated",
            "validation_error_count",
            "validation_errors_truncated",
            "rounds",
            "attempts",
            "retried",
            "recovered",
            "usage",
            "cost",
            "estimate",
        }
    )

    schema_version: Literal[1] = SCHEMA_VERSION
    job_id: str
    outcome: Outcome
    input: InputInfo
    counts: Counts
    errors_by_code: dict[str, int]
    batches: list[BatchEntry]
    batch_count: int | None = None
    batches_truncated: bool | None = None
    validation_errors: list[ValidationProblem]
    validation_error_count: int | None = None
    validation_errors_truncated: bool | None = None
    outputs: Outputs
    timestamps: Timestamps
    rounds: list[RoundSummary] | None = None
    attempts: dict[str, int] | None = None
    retried: int | None = None
    recovered: int | None = None
    usage: Usage | None = None
    cost: Cost | None = None
    estimate: Estimate | None = None


class FinishedDetail(_Document):
    """`Batch Job Finished` (also the SNS message's source)."""

    OMITTED_WHEN_NONE = frozenset(
        {"validation_error_count", "rounds", "attempts", "retried", "recovered", "round", "usage", "cost"}
    )

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: str
    job_id: str
    outcome: Outcome
    counts: Counts
    errors_by_code: dict[str, int]
    input: InputInfo
    outputs: Outputs
    finished_at: str | None
    validation_error_count: int | None = None
    rounds: list[RoundSummary] | None = None
    attempts: dict[str, int] | None = None
    retried: int | None = None
    recovered: int | None = None
    round: int | None = None
    """The job's last round; a job retried by hand is announced again at the end of each retry."""
    usage: Usage | None = None
    cost: Cost | None = None


class RoundFinishedDetail(_Document):
    """`Batch Job Round Finished`: a round of a job has ended and some of its failed lines go again as the
    next round (sent once per round, best effort; `Batch Job Finished` follows at the job's true end)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: str
    job_id: str
    input: InputInfo
    round: int
    """The round that ended (0: the input's own batches)."""
    next_round: int
    lines_redriven: int
    """Lines the next round sends again."""
    next_round_batches: int
    succeeded_so_far: int
    rounds: list[RoundSummary]
    """Every round so far, as report.json will list them."""
    sent_at: str | None


class SubmittedDetail(_Document):
    """`Batch Job Submitted`"""

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: str
    job_id: str
    input: InputInfo
    batch_count: int
    batch_ids: list[str]
    shard_count: int


class RejectedDetail(_Document):
    """`Batch Job Rejected`: a `Submit Batch Job` request that could not be taken."""

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: str
    request: Any
    reason: str
    rejected_at: str


class BatchCounts(_Document):
    total: int
    running: int
    ended: int


class Status(_Document):
    """outbox/<name>/status.json: a running job's progress (flow/progress.py); at its end, the outcome."""

    schema_version: Literal[1] = SCHEMA_VERSION
    job_id: str
    status: str
    """validating, submitting, running, collecting, retrying; at the end the outcome (as report.json's)."""
    finished: bool
    input: InputInfo
    round: int
    request_counts: RequestCounts
    """Summed over the job's batches, of every round, as the poller last saw them."""
    batches: BatchCounts
    counts: Counts | None
    """At the end: the job's lines, succeeded and failed (null while it runs)."""
    eta_seconds: int | None
    estimated_finish_at: str | None
    updated_at: str | None
    outputs: Outputs
    timestamps: Timestamps


# builders: one per document


def finished_event_id(job_id: str, retries: int = 0) -> str:
    """Stable across redeliveries: consumers deduplicate `Batch Job Finished` on it (a retry asked for
    by hand ends with an announcement of its own)."""
    return f"{job_id}:finished" if not retries else f"{job_id}:finished:retry-{retries}"


def outputs(job: Job, *, report_only: bool = False, results_csv: bool = False) -> Outputs:
    base = f"s3://{job.input.bucket}/{job.output_prefix}"
    if report_only:
        return Outputs(report=f"{base}report.json")
    return Outputs(
        output=f"{base}output.jsonl",
        errors=f"{base}errors.jsonl",
        report=f"{base}report.json",
        results_csv=f"{base}results.csv" if results_csv else None,
    )


def timestamps(job: Job, *, finished_at: int | None = None) -> Timestamps:
    return Timestamps(
        received_at=iso(job.received_at),
        submitted_at=iso(job.submitted_at),
        finished_at=iso(job.finished_at if finished_at is None else finished_at),
    )


def _batch_entry(shard: Shard) -> BatchEntry:
    return BatchEntry(
        batch_id=shard.batch_id,
        status=shard.batch_status,
        request_counts=shard.request_counts,
        input_file_id=shard.input_file_id,
        output_file_id=shard.output_file_id,
        error_file_id=shard.error_file_id,
        shard=shard.index,
        lines=shard.lines,
        first_line=shard.first_line,
        failure=BatchFailure(code=shard.failure_code, message=shard.failure_message) if shard.failure_code else None,
        round=shard.round or None,
    )


def recovery(job: Job, shards: Sequence[Shard]) -> Recovery:
    """The rounds of a finished job, from its collected shards."""
    rounds: dict[int, dict[str, Any]] = {}
    attempts: dict[str, int] = {}
    for shard in shards:
        result = shard.result
        if result is None:
            continue
        summary = rounds.setdefault(
            shard.round,
            {"round": shard.round, "batches": 0, "lines": 0, "succeeded": 0, "failed": 0, "redriven": 0, "codes": {}},
        )
        summary["batches"] += 1
        summary["lines"] += shard.lines
        summary["succeeded"] += result.succeeded
        summary["failed"] += result.failed
        for code, n in result.errors_by_code.items():
            add_count(summary["codes"], code, n)
        final_failed, _, _ = result.final(job.round)
        summary["redriven"] += result.failed - final_failed
        attempt = str(shard.attempt)
        if result.succeeded + final_failed:
            attempts[attempt] = attempts.get(attempt, 0) + result.succeeded + final_failed
    summaries = [
        RoundSummary(
            round=number,
            batches=values["batches"],
            lines=values["lines"],
            succeeded=values["succeeded"],
            failed=values["failed"],
            errors_by_code=dict(sorted(values["codes"].items())),
            redriven=values["redriven"],
        )
        for number, values in sorted(rounds.items())
    ]
    return Recovery(
        rounds=summaries,
        attempts=dict(sorted(attempts.items(), key=lambda item: int(item[0]))),
        retried=sum(summary.lines for summary in summaries if summary.round),
        recovered=sum(summary.succeeded for summary in summaries if summary.round),
    )


def _tokens(usage: TokenUsage) -> Tokens:
    return Tokens.model_validate(usage.model_dump())


def usage_of(shards: Sequence[Shard]) -> Usage:
    """The job's tokens, from its committed shards' results (a succeeded line is in exactly one of them)."""
    by_model: dict[str, TokenUsage] = {}
    wasted = TokenUsage()
    for shard in shards:
        if shard.result is None:
            continue
        for model, tokens in shard.result.usage.items():
            by_model[model] = by_model.get(model, TokenUsage()).plus(tokens)
        if shard.result.wasted is not None:
            wasted = wasted.plus(shard.result.wasted)
    total = TokenUsage()
    for tokens in by_model.values():
        total = total.plus(tokens)
    return Usage(
        total=_tokens(total),
        by_model={model: _tokens(by_model[model]) for model in sorted(by_model)},
        wasted=_tokens(wasted),
    )


def cost_of(usage: Usage, prices: PriceTable) -> Cost:
    total, by_model = prices.costs(
        {model: (tokens.prompt_tokens, tokens.completion_tokens) for model, tokens in usage.by_model.items()}
    )
    return Cost(
        currency=prices.currency,
        total=total,
        by_model=by_model,
        unpriced_models=[model for model, value in by_model.items() if value is None],
        prices_as_of=prices.as_of,
    )


def estimate_of(job: Job, prices: PriceTable, limit: float) -> Estimate | None:
    if job.estimate is None:
        return None  # split before estimates were kept, or taken over from an attempt that died
    total, by_model = job.estimate.cost(prices)
    return Estimate(
        method=estimate.METHOD,
        total=TokenEstimateEntry.model_validate(job.estimate.total().model_dump()),
        by_model={
            model: TokenEstimateEntry.model_validate(entry.model_dump())
            for model, entry in sorted(job.estimate.by_model.items())
        },
        cost=EstimatedCost(
            currency=prices.currency,
            total=total,
            by_model=by_model,
            unpriced_models=[model for model, value in by_model.items() if value is None],
            prices_as_of=prices.as_of,
            limit=limit or None,
        ),
    )


def finished_report(
    job: Job,
    shards: Sequence[Shard],
    counts: Counts,
    errors_by_code: dict[str, int],
    prices: PriceTable = DEFAULT_PRICES,
    cost_limit: float = 0,
    results_csv: bool = False,
) -> Report:
    recovered = recovery(job, shards)
    usage = usage_of(shards)
    return Report(
        job_id=job.job_id,
        outcome=job.outcome or Outcome.FAILED,
        input=job.input,
        counts=counts,
        errors_by_code=errors_by_code,
        batches=[_batch_entry(shard) for shard in shards[:MAX_REPORTED_BATCHES]],
        batch_count=len(shards),
        batches_truncated=len(shards) > MAX_REPORTED_BATCHES,
        validation_errors=[],
        outputs=outputs(job, results_csv=results_csv),
        timestamps=timestamps(job),
        rounds=recovered.rounds,
        attempts=recovered.attempts,
        retried=recovered.retried,
        recovered=recovered.recovered,
        usage=usage,
        cost=cost_of(usage, prices),
        estimate=estimate_of(job, prices, cost_limit),
    )


def rejection_report(
    job: Job,
    *,
    lines: int,
    problems: Sequence[Problem],
    problem_count: int,
    errors_by_code: dict[str, int],
    now: int,
    prices: PriceTable = DEFAULT_PRICES,
    cost_limit: float = 0,
) -> Report:
    return Report(
        job_id=job.job_id,
        outcome=Outcome.REJECTED,
        input=job.input,
        counts=Counts(total=lines, succeeded=0, failed=0),
        errors_by_code=errors_by_code,
        batches=[],
        validation_errors=[
            ValidationProblem(line=problem.line, code=problem.code.value, message=problem.message, fix=problem.fix)
            for problem in problems
        ],
        validation_error_count=problem_count,
        validation_errors_truncated=problem_count > len(problems),
        outputs=outputs(job, report_only=True),
        timestamps=timestamps(job, finished_at=now),
        estimate=estimate_of(job, prices, cost_limit),
    )


def finished_detail(
    job: Job,
    counts: Counts,
    errors_by_code: dict[str, int],
    recovered: Recovery | None = None,
    *,
    usage: Usage | None = None,
    cost: Cost | None = None,
    results_csv: bool = False,
) -> FinishedDetail:
    return FinishedDetail(
        event_id=finished_event_id(job.job_id, job.retries),
        job_id=job.job_id,
        outcome=job.outcome or Outcome.FAILED,
        counts=counts,
        errors_by_code=errors_by_code,
        input=job.input,
        outputs=outputs(job, results_csv=results_csv),
        finished_at=iso(job.finished_at),
        rounds=recovered.rounds if recovered else None,
        attempts=recovered.attempts if recovered else None,
        retried=recovered.retried if recovered else None,
        recovered=recovered.recovered if recovered else None,
        round=job.round if recovered else None,
        usage=usage,
        cost=cost,
    )


def rejected_input_detail(job: Job) -> FinishedDetail:
    """The `Batch Job Finished` of a rejected input, from what the job recorded."""
    return FinishedDetail(
        event_id=finished_event_id(job.job_id),
        job_id=job.job_id,
        outcome=job.outcome or Outcome.REJECTED,
        counts=Counts(total=job.input.lines or 0, succeeded=0, failed=0),
        errors_by_code=job.errors_by_code or {},
        input=job.input,
        outputs=outputs(job, report_only=True),
        finished_at=iso(job.finished_at),
        validation_error_count=job.validation_error_count or 0,
    )


def submitted_detail(job: Job, shards: Sequence[Shard]) -> SubmittedDetail:
    batch_ids = [shard.batch_id for shard in shards if shard.batch_id]
    return SubmittedDetail(
        event_id=f"{job.job_id}:submitted",
        job_id=job.job_id,
        input=job.input,
        batch_count=len(batch_ids),
        batch_ids=batch_ids,
        shard_count=len(shards),
    )


def rejected_request_detail(request: Any, reason: str, now: int) -> RejectedDetail:
    """The request is echoed as received, or, over 8 KB, as a preview; the event id is the same for the
    same request and reason."""
    text = json.dumps(request, default=str)
    echoed = request if len(text) <= _MAX_ECHOED_REQUEST_CHARS else {"truncated": True, "preview": text[:1024]}
    event_id = hashlib.sha256(json.dumps([echoed, reason], sort_keys=True, default=str).encode()).hexdigest()[:32]
    return RejectedDetail(event_id=event_id, request=echoed, reason=reason, rejected_at=iso(now) or "")


def status_document(job: Job, progress: JobProgress, *, counts: LineCounts | None = None) -> Status:
    finished = job.status in (JobStatus.FINISHED, JobStatus.REJECTED)
    eta = progress.eta_seconds
    return Status(
        job_id=job.job_id,
        status=progress.status,
        finished=finished,
        input=job.input,
        round=progress.round,
        request_counts=progress.request_counts,
        batches=BatchCounts(total=progress.batches, running=progress.batches_running, ended=progress.batches_ended),
        counts=Counts(total=counts.total, succeeded=counts.succeeded, failed=counts.failed) if counts else None,
        eta_seconds=eta,
        estimated_finish_at=iso(progress.updated_at + eta) if eta is not None and not finished else None,
        updated_at=iso(progress.updated_at),
        outputs=outputs(job, results_csv=False) if finished else outputs(job, report_only=True),
        timestamps=timestamps(job),
    )


def round_finished_detail(
    job: Job, shards: Sequence[Shard], *, lines: int, batches: int, now: int
) -> RoundFinishedDetail:
    """`job` as it was when its round ended (before the next round was committed); `shards` its shards then."""
    summaries = recovery(job, shards).rounds
    return RoundFinishedDetail(
        event_id=f"{job.job_id}:round-{job.round}",
        job_id=job.job_id,
        input=job.input,
        round=job.round,
        next_round=job.round + 1,
        lines_redriven=lines,
        next_round_batches=batches,
        succeeded_so_far=sum(summary.succeeded for summary in summaries),
        rounds=summaries,
        sent_at=iso(now),
    )
