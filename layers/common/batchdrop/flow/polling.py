"""Poll: one scheduled run moves on what is due, whatever the backlog.

The sparse index keeps three kinds of work apart (see store.py), and each is taken in its own way:
- ACTIVE shards that are due, read page by page for as long as the run has time, oldest first:
  - SUBMITTED: the batch is retrieved (concurrently, bounded); status and counts are recorded with a
    conditional write and the next poll time adapts to the batch's progress; an ended batch goes to
    collect;
  - TERMINAL: handed to collect again if collect has not taken it after a while;
  - PENDING (a submission being retried, or a cancelled job's shard): handed to the submit function;
- WAITING shards, oldest first, as many as there are free in-flight slots: handed to the submit function
  (an upload can take longer than a poll run may);
- FINISHING jobs whose announcement was claimed but never recorded: handed to collect to finish it.

Nothing is polled or retried forever: a shard that waits for a slot, a batch the API no longer knows
(404), a batch that outlives its deadline, results that cannot be fetched, each end at their bound
(settings.Settings) with a code that says why, and the job ends with them.
Two overlapping runs are safe: every write is conditional, so at most one of them acts on a change.
"""

from __future__ import annotations

import functools
import itertools
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass, field
from enum import StrEnum

from botocore.exceptions import ClientError

from batchdrop.flow import progress, watch
from batchdrop.integrations.store import StaleRecord
from batchdrop.integrations.zerogpu import (
    CANCELLABLE_STATUSES,
    ENDING_STATUSES,
    RUNNING_STATUSES,
    NotFoundError,
    ZeroGPUError,
)
from batchdrop.models import NOT_CREATED, FailureCode, Job, RequestCounts, Shard, ShardResult, ShardState
from batchdrop.observability import Metric, count, logger
from batchdrop.services import Services
from batchdrop.timing import (
    COLLECT_GIVE_UP_SLACK_SECONDS,
    COLLECT_RETRY_SECONDS,
    HANDOVER_RETRY_SECONDS,
    NOTIFY_GIVE_UP_SECONDS,
    NOTIFY_LEASE_SECONDS,
)

_MAX_WAITING_READ = 1000  # beyond the free slots: shards of cancelled jobs and ones in transit
_MAX_MESSAGE_CHARS = 500


class Visit(StrEnum):
    """What one look at a due shard did (each is a counter of PollSummary)."""

    HANDED_OVER = "handed_over"
    POLLED = "polled"
    ENDED = "ended"
    TIMED_OUT = "timed_out"
    COLLECT_REQUESTS = "collect_requests"
    FINALIZE_REQUESTS = "finalize_requests"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class Failed:
    """A shard that could not be moved on this run (the next run tries again)."""

    shard: str
    error: str


@dataclass
class PollSummary:
    due: int = 0
    handed_over: int = 0
    polled: int = 0
    ended: int = 0
    timed_out: int = 0
    collect_requests: int = 0
    finalize_requests: int = 0
    skipped: int = 0
    out_of_time: bool = False
    saw_waiting: bool = False
    """Some shard waits for an in-flight slot."""
    errors: list[str] = field(default_factory=list)

    def tally(self, outcome: Visit | Failed) -> None:
        if isinstance(outcome, Failed):
            if len(self.errors) < 100:
                self.errors.append(f"{outcome.shard}: {outcome.error}")
            else:
                self.errors[-1] = f"... and more ({outcome.shard}: {outcome.error})"
        else:
            setattr(self, outcome.value, getattr(self, outcome.value) + 1)


class _RunJobs:
    """The jobs of the run's running batches, read once per job and run: the worker threads share them,
    and threads that ask for the same job at once wait for the one read instead of making their own. The
    jobs of a page of shards can be read ahead, a hundred to a call (`prefetch`). Called with a job id, it
    says whether the job was cancelled."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self._known: dict[str, Future[Job | None]] = {}
        self._lock = threading.Lock()

    def prefetch(self, job_ids: Iterable[str]) -> None:
        """Reads the jobs not known yet in batches. Best effort: if the batch read fails, each job is read
        alone when first asked about, as without it."""
        with self._lock:
            unknown = [job_id for job_id in dict.fromkeys(job_ids) if job_id not in self._known]
        if not unknown:
            return
        try:
            jobs = self._services.store.get_jobs(unknown)
        except Exception as error:  # a courtesy, as the read it saves is made later anyway
            logger.warning("could not read the page's jobs ahead", extra={"error": repr(error)})
            return
        with self._lock:
            for job_id in unknown:
                if job_id not in self._known:  # else a thread has read it meanwhile
                    known = self._known[job_id] = Future()
                    known.set_result(jobs.get(job_id))

    def job(self, job_id: str) -> Job | None:
        with self._lock:
            known = self._known.get(job_id)
            reader = known is None
            if known is None:
                known = self._known[job_id] = Future()
        if reader:
            try:
                known.set_result(self._services.store.get_job(job_id))
            except BaseException as error:
                known.set_exception(error)
                with self._lock:
                    del self._known[job_id]  # the next shard of the job asks again
        return known.result()

    def known(self, job_id: str) -> Job | None:
        """The job if it was read this run (no read of its own)."""
        with self._lock:
            known = self._known.get(job_id)
        if known is None or not known.done() or known.exception() is not None:
            return None
        return known.result()

    def __call__(self, job_id: str) -> bool:
        job = self.job(job_id)
        return job is not None and job.cancel_requested_at is not None


def poll_once(services: Services) -> PollSummary:
    summary = PollSummary()
    cancelled = _RunJobs(services)
    live = progress.LiveBatches()
    # The bounded kinds of work first (at most the free slots, at most a page of jobs), so that however
    # many running batches are due, the queue moves and lost announcements are found; then every due
    # running batch for as long as the run has time; then the slots that this run freed.
    _hand_over_waiting(services, summary, cancelled)
    if services.time_left():
        _sweep_finishing(services, summary)
    if services.time_left():
        _poll_active(services, summary, cancelled, live)
    if services.time_left():
        _hand_over_waiting(services, summary, cancelled)
    if services.time_left():
        _record_progress(services, cancelled, live)
    if services.time_left() and (summary.due or summary.saw_waiting):  # an idle run reads nothing more
        _report_gauges(services)
    summary.out_of_time = not services.time_left()
    return summary


def _report_gauges(services: Services) -> None:
    """The dashboard's batches in flight and shards held back, as this run leaves them (two reads a run)."""
    try:
        count(Metric.BATCHES_IN_FLIGHT, services.store.slots_in_use())
        waiting, complete = services.store.count_waiting()
        count(Metric.SHARDS_WAITING, waiting)
        if not complete:
            logger.warning(
                "more shards wait for a slot than one run counts: the figure is a lower bound",
                extra={"waiting_at_least": waiting},
            )
    except Exception as error:  # a figure for the dashboard; the next run gives it again
        logger.warning("could not read the in-flight figures", extra={"error": repr(error)})


def _poll_active(services: Services, summary: PollSummary, cancelled: _RunJobs, live: progress.LiveBatches) -> None:
    """Every due ACTIVE shard, oldest first, for as long as the run has time, visited by a bounded pool of
    threads. The index is read a page ahead, with the jobs of the page's running batches, while the
    threads visit the page before; no thread waits for a page to end before it starts on the next."""
    concurrency = services.settings.poll_concurrency
    with ThreadPoolExecutor(max_workers=concurrency) as pool, ThreadPoolExecutor(max_workers=1) as reader:
        due = _due_shards(services, summary, cancelled, reader)
        for outcome in _each_done(pool, lambda shard: _visit(shard, services, cancelled, live), due, 2 * concurrency):
            summary.tally(outcome)


def _due_shards(
    services: Services, summary: PollSummary, cancelled: _RunJobs, reader: ThreadPoolExecutor
) -> Iterator[Shard]:
    """The due shards, a page at a time, each page read (by `reader`) while the one before is taken."""
    pages = services.store.due_shard_pages(services.now())
    read_next = functools.partial(_read_page, pages, cancelled)
    upcoming = reader.submit(read_next)
    while (page := upcoming.result()) is not None:
        if not services.time_left():
            summary.out_of_time = True
            return
        upcoming = reader.submit(read_next)
        summary.due += len(page)
        yield from page


def _read_page(pages: Iterator[list[Shard]], cancelled: _RunJobs) -> list[Shard] | None:
    """The next page of due shards (None after the last), with the jobs of its running batches read."""
    page = next(pages, None)
    if page:
        cancelled.prefetch(shard.job_id for shard in page if shard.state == ShardState.SUBMITTED)
    return page


def _each_done(
    pool: ThreadPoolExecutor, action: Callable[[Shard], Visit | Failed], shards: Iterator[Shard], window: int
) -> Iterator[Visit | Failed]:
    """`action` on each shard in the pool, as each ends; at most `window` started and not yet ended, so
    that the shards are taken from `shards` only as the threads come free."""
    running: set[Future[Visit | Failed]] = set()
    for shard in shards:
        if len(running) >= window:
            done, running = wait(running, return_when=FIRST_COMPLETED)
            yield from (future.result() for future in done)
        running.add(pool.submit(action, shard))
    yield from (future.result() for future in as_completed(running))


def _failed(shard: Shard, error: Exception) -> Failed:
    return Failed(f"{shard.job_id}/{shard.index}", type(error).__name__)


def _visit(shard: Shard, services: Services, cancelled: _RunJobs, live: progress.LiveBatches) -> Visit | Failed:
    if not services.time_left():
        return Visit.SKIPPED
    try:
        if shard.state == ShardState.SUBMITTED:
            return _refresh(shard, services, cancelled, live)
        if shard.state == ShardState.TERMINAL:
            return _collect_again(shard, services)
        if shard.state == ShardState.PENDING:
            return _hand_over(shard, services)
    except StaleRecord:
        return Visit.SKIPPED
    except (ZeroGPUError, ClientError) as error:
        logger.warning("shard not moved on; retried next run", extra={"shard": shard.index, "error": repr(error)})
        return _failed(shard, error)
    except Exception as error:  # anything else (a missing secret, a bug): this shard waits, the run goes on
        logger.exception("shard not moved on; tried again later", extra={"shard": shard.index})
        _put_back(shard, services)
        return _failed(shard, error)
    return Visit.SKIPPED


def _put_back(shard: Shard, services: Services) -> None:
    """Due again a little later, so that a shard that fails for an unforeseen reason does not stay first
    in line every run (best effort: if this write fails too, the next run tries both again)."""
    try:
        services.store.update_shard(shard, next_poll_at=services.now() + services.settings.poll_min_interval_seconds)
    except Exception:  # the write is a courtesy; its failure changes nothing
        logger.warning("could not move the failing shard back", extra={"shard": shard.index})


def _hand_over(shard: Shard, services: Services) -> Visit:
    """Sends a shard to the submit function, due again later in case the message is lost or no slot is
    free by the time it arrives. Shards waiting for a slot keep their place in the queue."""
    now = services.now()
    if shard.lease_until is not None and shard.lease_until > now:
        return Visit.SKIPPED  # an invocation is working on it
    changes: dict[str, object] = {"handed_over_at": now}
    if shard.holds_slot or shard.cancel_requested:
        changes["next_poll_at"] = now + HANDOVER_RETRY_SECONDS
    services.store.update_shard(shard, **changes)
    services.queues.hand_over(shard.job_id, shard.index)
    return Visit.HANDED_OVER


def _hand_over_waiting(services: Services, summary: PollSummary, cancelled: _RunJobs) -> None:
    """The queue of shards waiting for a slot: those past their bound end; then, oldest first, as many
    are handed over as slots are free (counting those handed over recently and still in transit)."""
    settings, store = services.settings, services.store
    now = services.now()
    limit = int(settings.shard_wait_limit_hours * 3600)
    for shard in store.waiting_shards(until=now - limit, limit=_MAX_WAITING_READ, page_size=50):
        if not services.time_left():
            return
        summary.tally(_end_waiting(shard, now, limit, services))
    # The queue first: with nobody waiting, the slot counter need not be read.
    queue = iter(store.waiting_shards(limit=settings.max_batches_in_flight + _MAX_WAITING_READ, page_size=50))
    first = next(queue, None)
    if first is None:
        return
    summary.saw_waiting = True
    free = settings.max_batches_in_flight - store.slots_in_use()
    if free <= 0:
        return
    for shard in itertools.chain([first], queue):
        if free <= 0 or not services.time_left():
            return
        recently = shard.handed_over_at is not None and shard.handed_over_at > now - HANDOVER_RETRY_SECONDS
        leased = shard.lease_until is not None and shard.lease_until > now
        if not cancelled(shard.job_id):
            free -= 1  # a slot this shard takes, or will take once its message arrives
        summary.tally(
            Visit.SKIPPED if recently or leased else _guarded(shard, functools.partial(_hand_over, shard, services))
        )


def _end_waiting(shard: Shard, now: int, limit: int, services: Services) -> Visit | Failed:
    def end() -> Visit:
        ended = services.store.end_shard(
            shard,
            batch_status=NOT_CREATED,
            failure_code=FailureCode.WAIT_TIMED_OUT,
            failure_message=(
                f"no in-flight slot came free within {limit // 3600} hours (SHARD_WAIT_LIMIT_HOURS); "
                "raise MaxBatchesInFlight or ShardWaitLimitHours"
            ),
            next_poll_at=now + COLLECT_RETRY_SECONDS,
        )
        count(Metric.SHARDS_TIMED_OUT)
        logger.error("shard waited too long for a slot", extra={"shard": shard.index, "job_id": shard.job_id})
        send_collect(ended, services)
        return Visit.TIMED_OUT

    return _guarded(shard, end)


def _guarded(shard: Shard, action: Callable[[], Visit]) -> Visit | Failed:
    """Runs one step on a shard: a lost race skips it, an API or AWS failure is left to the next run."""
    try:
        return action()
    except StaleRecord:
        return Visit.SKIPPED
    except (ZeroGPUError, ClientError) as error:
        return _failed(shard, error)
    except Exception as error:  # as in _visit: the run goes on
        logger.exception("shard not moved on; tried again later", extra={"shard": shard.index})
        return _failed(shard, error)


def _refresh(shard: Shard, services: Services, cancelled: _RunJobs, live: progress.LiveBatches) -> Visit:
    assert shard.batch_id is not None
    now = services.now()
    try:
        batch = services.api.retrieve_batch(shard.batch_id)
    except NotFoundError as error:
        return _retrieve_failed(shard, error, services, not_found=True)
    except ZeroGPUError as error:
        return _retrieve_failed(shard, error, services, not_found=False)
    status = str(batch.status)
    counts = batch.request_counts
    request_counts = (
        RequestCounts(total=counts.total, completed=counts.completed, failed=counts.failed) if counts else None
    )
    look = watch.look_at(shard, batch, request_counts, now, services.settings)
    past_deadline = now > _deadline(shard, services)
    if status in CANCELLABLE_STATUSES and (cancelled(shard.job_id) or past_deadline or look.cancel_early):
        try:
            batch = services.api.cancel_batch(shard.batch_id)
        except ZeroGPUError:
            if not past_deadline:
                raise  # tried again next run
            logger.warning("the batch could not be cancelled at its deadline; it is ended all the same")
        status = str(batch.status)
        if look.cancel_early:
            count(Metric.BATCHES_CANCELLED_EARLY)
            logger.warning(
                "batch cancelled near its expiry (CANCEL_NEAR_EXPIRY): its unrun lines go into the next round",
                extra={"shard": shard.index, "batch_id": shard.batch_id, "request_counts": _counts_of(request_counts)},
            )
    _report_look(shard, look, request_counts)
    if batch.is_terminal or past_deadline:
        timed_out = not batch.is_terminal
        shard = services.store.end_shard(
            shard,
            batch_status=status,
            request_counts=request_counts,
            output_file_id=batch.output_file_id,
            error_file_id=batch.error_file_id,
            next_poll_at=now + COLLECT_RETRY_SECONDS,
            poll_failing_since=None,
            not_found_since=None,
            poll_error=None,
            **_timed_out_failure(shard, services) if timed_out else {},
        )
        live.add(shard, status, request_counts, now)
        details = {"shard": shard.index, "batch_id": shard.batch_id, "status": status}
        if timed_out:
            count(Metric.BATCHES_TIMED_OUT)
            logger.error("batch past its deadline; cancelled and ended", extra=details)
        else:
            count(Metric.BATCHES_ENDED)
            logger.info("batch ended", extra=details)
        send_collect(shard, services)
        return Visit.TIMED_OUT if timed_out else Visit.ENDED
    if status not in RUNNING_STATUSES:
        count(Metric.UNKNOWN_BATCH_STATUS)
        logger.warning("unknown batch status; still polling", extra={"status": status})
    services.store.update_shard(
        shard,
        batch_status=status,
        request_counts=request_counts,
        next_poll_at=now
        + next_poll_interval(shard.model_copy(update=look.changes), request_counts, status, now, services),
        poll_failing_since=None,
        not_found_since=None,
        poll_error=None,
        **look.changes,
    )
    live.add(shard, status, request_counts, now)
    return Visit.POLLED


def _record_progress(services: Services, jobs: _RunJobs, live: progress.LiveBatches) -> None:
    """The progress of each job whose batches the run looked at (flow/progress.py), a job at a time, for
    as long as the run has time: at most one write a job per STATUS_INTERVAL_SECONDS."""
    seen = live.jobs()
    interval = services.settings.status_interval_seconds
    due_before = services.now() - interval
    # Not read this run (their batches are seen again next time), or written recently: left out. Of the
    # rest, those written longest ago first, at most STATUS_JOBS_PER_RUN.
    due = [
        job
        for job in (jobs.known(job_id) for job_id in seen)
        if job is not None and (job.live_at is None or job.live_at <= due_before)
    ]
    due = sorted(due, key=lambda job: job.live_at or 0)[: services.settings.status_jobs_per_run]
    if not due:
        return
    try:
        stored = services.store.get_live_batches_of(due)  # every due job's last looks, read together
    except Exception as error:  # a courtesy: never the run's failure
        logger.warning("could not read the jobs' progress", extra={"error": repr(error)})
        return

    def write(job: Job) -> None:
        if not services.time_left():
            return
        try:
            progress.record(job, seen[job.job_id], services, stored=stored.get(job.job_id, {}))
        except Exception as error:  # a courtesy: never the run's failure
            logger.warning("could not record the job's progress", extra={"job_id": job.job_id, "error": repr(error)})

    with ThreadPoolExecutor(max_workers=min(len(due), services.settings.poll_concurrency)) as pool:
        list(pool.map(write, due))


def _counts_of(counts: RequestCounts | None) -> dict[str, int] | None:
    return counts.model_dump() if counts else None


def _report_look(shard: Shard, look: watch.Look, counts: RequestCounts | None) -> None:
    details = {"shard": shard.index, "batch_id": shard.batch_id, "request_counts": _counts_of(counts)}
    if look.stuck:
        count(Metric.BATCHES_STUCK)  # on every look while stuck: the alarm stays on while it is
        if look.newly_stuck:
            logger.warning("batch makes no progress (STUCK_AFTER_MINUTES)", extra=details)
    if look.newly_near_expiry:
        count(Metric.BATCHES_NEAR_EXPIRY)
        logger.warning("batch near its expiry with work left (EXPIRY_WARNING_HOURS)", extra=details)


def _deadline(shard: Shard, services: Services) -> int:
    created = shard.create_started_at or shard.first_attempt_at or services.now()
    return created + int(services.settings.batch_deadline_hours * 3600)


def _timed_out_failure(shard: Shard, services: Services) -> dict[str, str]:
    hours = services.settings.batch_deadline_hours
    return {
        "failure_code": FailureCode.BATCH_TIMED_OUT,
        "failure_message": f"batch {shard.batch_id} had not ended {hours:g} hours after it was created "
        "(BATCH_DEADLINE_HOURS); it was cancelled",
    }


def _retrieve_failed(shard: Shard, error: ZeroGPUError, services: Services, *, not_found: bool) -> Visit:
    """A batch the API does not answer for: tried again each run, until its bound."""
    now = services.now()
    since = shard.poll_failing_since or now
    # The 404 grace counts 404s only: an hour of 5xx replies then one 404 does not end a running batch.
    not_found_since = (shard.not_found_since or now) if not_found else None
    grace = int(services.settings.batch_not_found_grace_minutes * 60)
    message = f"{type(error).__name__}: {error}"[:_MAX_MESSAGE_CHARS]
    if not_found_since is not None and now - not_found_since >= grace:
        ended = services.store.end_shard(
            shard,
            failure_code=FailureCode.BATCH_NOT_FOUND,
            failure_message=(
                f"the API answered 404 for batch {shard.batch_id} for {grace // 60} minutes "
                "(BATCH_NOT_FOUND_GRACE_MINUTES): deleted, lost, or the API key now belongs to another project"
            ),
            next_poll_at=now + COLLECT_RETRY_SECONDS,
            poll_failing_since=since,
            poll_error=message,
        )
        count(Metric.BATCHES_NOT_FOUND)
        logger.error(
            "batch not found at the API; shard ended", extra={"shard": shard.index, "batch_id": shard.batch_id}
        )
        send_collect(ended, services)
        return Visit.TIMED_OUT
    if now > _deadline(shard, services):
        ended = services.store.end_shard(
            shard,
            next_poll_at=now + COLLECT_RETRY_SECONDS,
            poll_failing_since=since,
            poll_error=message,
            **_timed_out_failure(shard, services),
        )
        count(Metric.BATCHES_TIMED_OUT)
        logger.error("batch unreachable past its deadline; shard ended", extra={"shard": shard.index})
        send_collect(ended, services)
        return Visit.TIMED_OUT
    services.store.update_shard(
        shard,
        poll_failing_since=since,
        not_found_since=not_found_since,
        poll_error=message,
        next_poll_at=now + services.settings.poll_min_interval_seconds,
    )
    logger.warning("batch retrieve failed; tried again", extra={"shard": shard.index, "error": message})
    raise error


def next_poll_interval(shard: Shard, counts: RequestCounts | None, status: str, now: int, services: Services) -> int:
    """Soon when the end is near, rarely when a batch is long: a day-long batch costs a few hundred calls."""
    low, high = services.settings.poll_min_interval_seconds, services.settings.poll_max_interval_seconds
    if status in ENDING_STATUSES:
        return low
    age = max(1, now - (shard.create_started_at or now))
    done = (counts.completed + counts.failed) if counts else 0
    total = counts.total if counts else 0
    if done > 0 and total > done:
        estimate = (total - done) * age / done  # seconds left at the rate seen so far
        interval = estimate / 2
    else:
        interval = age / 10
    deadline_in = _deadline(shard, services) - now
    # A look when the expiry warning is due (and, while no line moves, when the batch would count as stuck).
    warning_at = watch.expiry_warning_at(shard, services.settings)
    if warning_at is not None and warning_at > now and shard.near_expiry_at is None:
        interval = min(interval, warning_at - now)
    if status == "in_progress" and shard.stuck_since is None and shard.progress_at is not None:
        stuck_at = shard.progress_at + int(services.settings.stuck_after_minutes * 60)
        if stuck_at > now:
            interval = min(interval, stuck_at - now)
    return int(max(low, min(high, interval, max(deadline_in, low))))


def _collect_again(shard: Shard, services: Services) -> Visit:
    """An ended shard collect has not taken: asked again; past its bound, ended here (its lines counted
    as `collect_failed`) so that the job can end."""
    now = services.now()
    limit = int(services.settings.collect_retry_limit_hours * 3600) + COLLECT_GIVE_UP_SLACK_SECONDS
    if shard.ended_at is not None and now - shard.ended_at > limit:
        # The job's end is due now, and swept until announced: recorded before the shard leaves the index,
        # so that no failure after this point can leave the job with nothing to move it on.
        services.store.modify_job(shard.job_id, lambda job: {"sweep_at": now} if job.notified_at is None else None)
        services.store.update_shard(
            shard,
            state=ShardState.COLLECTED,
            result=ShardResult(
                failed=shard.lines,
                errors_by_code={FailureCode.COLLECT_FAILED: shard.lines},
                output_key="",
                errors_key="",
            ),
            collect_error=(shard.collect_error or "collect never completed")[:_MAX_MESSAGE_CHARS],
        )
        count(Metric.SHARDS_ABANDONED)
        logger.error(
            "collect never completed for this shard; its lines end as collect_failed", extra={"shard": shard.index}
        )
        request_finalize(shard.job_id, services)
        return Visit.TIMED_OUT
    request_collect(shard, services)
    return Visit.COLLECT_REQUESTS


def request_collect(shard: Shard, services: Services) -> None:
    """Hands a terminal shard to collect again. The shard is first set to come due again later, in case
    the message is lost; if that write loses, another run (or collect itself) has moved it on already."""
    try:
        services.store.update_shard(shard, next_poll_at=services.now() + COLLECT_RETRY_SECONDS)
    except StaleRecord:
        return
    send_collect(shard, services)


def send_collect(shard: Shard, services: Services) -> None:
    """Hands a shard that has just ended to collect (its end set it due again later, in case the message
    is lost)."""
    services.queues.collect(shard.job_id, shard.index)


def request_finalize(job_id: str, services: Services) -> None:
    services.queues.finalize(job_id)


def _sweep_finishing(services: Services, summary: PollSummary) -> None:
    """Jobs that ended but whose announcement was never recorded (its claimant died): collect finishes
    them. A day after the job ended, the announcement is given up and an alarm says so."""
    now = services.now()
    for job in services.store.finishing_jobs(now, limit=_MAX_WAITING_READ):
        if not services.time_left():
            return
        try:
            if job.notified_at is not None or job.notify_abandoned_at is not None:
                services.store.update_job(job, sweep_at=None)  # announced already
                continue
            if job.finished_at is not None and now - job.finished_at > NOTIFY_GIVE_UP_SECONDS:
                services.store.update_job(job, notify_abandoned_at=now, sweep_at=None)
                count(Metric.ANNOUNCEMENTS_ABANDONED)
                logger.error("the job's announcement kept failing; given up", extra={"job_id": job.job_id})
                continue
            services.store.update_job(job, sweep_at=now + NOTIFY_LEASE_SECONDS)
            request_finalize(job.job_id, services)
            summary.tally(Visit.FINALIZE_REQUESTS)
        except StaleRecord:
            summary.tally(Visit.SKIPPED)
        except ClientError as error:
            summary.tally(Failed(job.job_id, type(error).__name__))
