"""The command line's errors are one clear line (a traceback only with --debug), and a closed pipe is quiet."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from testsupport import a_job

from batchdrop_tools import cli


def test_a_missing_region_is_one_line_naming_the_fix(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    assert cli.main(["jobs", "list", "--table", "t"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "batchdrop jobs: no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION), or configure one with `aws configure`"
    ]


def test_with_debug_the_error_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    from botocore.exceptions import NoRegionError

    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    with pytest.raises(NoRegionError):
        cli.main(["--debug", "jobs", "list", "--table", "t"])


def test_a_reader_that_goes_away_ends_the_command_quietly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def pipe_closed(args: object) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "_run", pipe_closed)
    assert cli.main(["jobs", "list", "--table", "t"]) == 0
    assert capsys.readouterr().err == ""


def test_a_bug_is_still_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(args: object) -> int:
        raise ZeroDivisionError

    monkeypatch.setattr(cli, "_run", broken)
    with pytest.raises(ZeroDivisionError):
        cli.main(["jobs", "list", "--table", "t"])


def test_a_dead_letter_is_described_by_what_it_was_and_why_it_failed() -> None:
    import json

    from batchdrop_tools.dlq import describe

    created = {
        "detail-type": "Object Created",
        "detail": {"bucket": {"name": "b"}, "object": {"key": "inbox/x.jsonl"}},
    }
    assert describe({"Body": json.dumps(created)}) == "Object Created s3://b/inbox/x.jsonl"
    assert describe({"Body": json.dumps({"job_id": "job-1", "shard": 3})}) == "collect job-1 shard 3"
    tick = {
        "Body": json.dumps({"detail-type": "Scheduled Event", "detail": {}}),
        "MessageAttributes": {"ERROR_MESSAGE": {"StringValue": "Lambda throttled"}},
    }
    assert describe(tick) == "Scheduled Event {}  (Lambda throttled)"
    assert describe({"Body": "oops"}) == "not JSON: oops"


def test_validate_checks_files_offline_with_line_numbers_and_exit_codes(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import gzip
    import json

    good = {
        "custom_id": "a",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "gpt-oss-120b", "messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 50},
    }
    fine = tmp_path / "fine.jsonl.gz"
    fine.write_bytes(gzip.compress((json.dumps(good) + "\n").encode()))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(good) + "\nnot json\n" + json.dumps(good) + "\n")

    assert cli.main(["validate", str(fine)]) == 0
    out = capsys.readouterr().out
    assert f"{fine}: valid: 1 line in 1 batch; about 100 input tokens and up to 50 output tokens" in out

    assert cli.main(["validate", str(fine), str(bad)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert any(
        line.startswith(f"{bad}: line 2: invalid_json: Line 2 is not valid JSON → each line must be") for line in out
    )
    assert (
        f'{bad}: line 3: duplicate_custom_id: Line 3 duplicates custom_id "a" → give each line its own `custom_id` '
        + ('(got "a", which an earlier line has)')
        in out
    )
    assert out[-1] == f"{bad}: rejected: 2 problems in 3 lines; nothing would be sent to the API"

    assert cli.main(["validate", str(tmp_path / "missing.jsonl")]) == 2
    assert "cannot be read" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["emulator", "local", "demo", "validate", "dlq", "submit", "status", "jobs"])
def test_every_command_has_help_with_examples(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ended:
        cli.main([command, "--help"])
    assert ended.value.code == 0
    assert "examples:" in capsys.readouterr().out


def test_every_option_of_every_command_says_what_it_does() -> None:
    def undocumented(parser: argparse.ArgumentParser, path: str) -> list[str]:
        found = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, command in action.choices.items():
                    found += undocumented(command, f"{path} {name}")
            elif action.help is None and action.option_strings:
                found.append(f"{path} {action.option_strings[-1]}")
        return found

    assert undocumented(cli._build_parser(), "batchdrop") == []


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert capsys.readouterr().out.startswith("batchdrop ")


def test_a_failed_upload_is_one_line_naming_the_fix() -> None:
    from boto3.exceptions import S3UploadFailedError

    error = S3UploadFailedError(
        "Failed to upload x.jsonl to nope/inbox/x.jsonl: An error occurred (NoSuchBucket) when calling the "
        "PutObject operation: The specified bucket does not exist"
    )
    line = cli._one_line(error)
    assert line is not None and "\n" not in line
    assert "NoSuchBucket" in line and "check the bucket (--bucket, --stack-name or --local)" in line


def _throttled() -> Exception:
    from botocore.exceptions import ClientError

    return ClientError(
        {"Error": {"Code": "ThrottlingException", "Message": "slow down"}, "ResponseMetadata": {"HTTPStatusCode": 400}},
        "GetItem",
    )


class _FlakyStore:
    """A jobs table that fails the first `failures` reads with `error`, then answers."""

    def __init__(self, job: Any, failures: int, error: Exception) -> None:
        self.job, self.failures, self.error, self.reads = job, failures, error, 0

    def get_job(self, job_id: str) -> Any:
        self.reads += 1
        if self.reads <= self.failures:
            raise self.error
        return self.job

    def get_live_batches(self, job: Any) -> dict[str, Any]:
        return {}


def test_a_followed_job_survives_reads_that_fail_for_a_while(capsys: pytest.CaptureFixture[str]) -> None:
    from test_contracts import JOB

    from batchdrop_tools import follow

    # Given a table that throttles the next three reads
    store = _FlakyStore(JOB, 3, _throttled())
    reader = follow._Reader(store, deadline=float("inf"), interval=0, timeout=60)  # type: ignore[arg-type]
    # When the wait reads on: it keeps the last look through the failures, then has the fresh one
    running = JOB.model_copy(update={"status": "submitting"})
    looks = [reader.next(running, {})[0] for _ in range(4)]
    assert [look.status for look in looks] == ["submitting"] * 3 + ["finished"]
    assert capsys.readouterr().err.count("could not read the job, trying again: ") == 3


def test_a_followed_job_gives_up_on_reads_that_keep_failing_and_at_once_on_others() -> None:
    from botocore.exceptions import ClientError
    from test_contracts import JOB

    from batchdrop_tools import follow

    store = _FlakyStore(JOB, 100, _throttled())
    reader = follow._Reader(store, deadline=float("inf"), interval=0, timeout=60)  # type: ignore[arg-type]
    for _ in range(follow.READ_FAILURES_TOLERATED):
        reader.next(JOB, {})
    with pytest.raises(ClientError):
        reader.next(JOB, {})
    denied = ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "GetItem")
    reader = follow._Reader(_FlakyStore(JOB, 1, denied), deadline=float("inf"), interval=0, timeout=60)  # type: ignore[arg-type]
    with pytest.raises(ClientError):
        reader.next(JOB, {})


def test_a_job_in_a_retry_shows_its_last_ends_counts_as_such() -> None:
    from batchdrop.models import Job, JobStatus, LineCounts, Outcome
    from batchdrop_tools.follow import describe

    # Given a job that ended partial and whose retry has started
    counts = LineCounts(total=3, succeeded=2, failed=1)
    ended = a_job(3, status=JobStatus.FINISHED, outcome=Outcome.PARTIAL, finished_at=1_060, counts=counts)
    retrying = ended.model_copy(update={"status": JobStatus.SUBMITTING, "outcome": None, "finished_at": None})

    # When each is shown, Then only the retrying one says its counts are those of its last end
    def lines_row(job: Job) -> str:
        return next(line for line in describe(job, [], 1_100, {}) if line.lstrip().startswith("lines"))

    assert lines_row(ended) == "  lines      2 succeeded, 1 failed of 3"
    assert lines_row(retrying) == "  lines      2 succeeded, 1 failed of 3 as at its last end (a retry is running)"


def test_a_reader_that_leaves_early_does_not_change_the_exit_code(tmp_path: Path) -> None:
    # Given a file with thousands of problems, each a line of output, and a reader that takes one line
    bad = tmp_path / "bad.jsonl"
    line = {"method": "POST", "url": "/v1/embeddings", "body": {"model": "m", "messages": []}}
    bad.write_text("".join(json.dumps({"custom_id": f"c{n}"} | line) + "\n" for n in range(3_000)))
    batchdrop = Path(sys.executable).parent / "batchdrop"

    # When validate's output is piped into `head -1` under pipefail, Then the exit code is validate's own,
    # every time (the reader has gone long before validate has written its last problem), and nothing is said
    for _ in range(3):
        piped = subprocess.run(
            ["bash", "-c", f"set -o pipefail; '{batchdrop}' validate --all '{bad}' | head -1"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (piped.returncode, piped.stderr) == (1, "")
        assert piped.stdout.count("\n") == 1


def test_an_ended_job_reads_as_how_its_lines_ended_not_as_all_done() -> None:
    from batchdrop.models import JobStatus, LineCounts, Outcome
    from batchdrop_tools.follow import glance

    # Given a job cancelled after 1,054 of its 23,422 lines had succeeded
    cancelled = a_job(
        23_422,
        status=JobStatus.FINISHED,
        outcome=Outcome.CANCELLED,
        finished_at=1_100,
        collected_shards={0},
        counts=LineCounts(total=23_422, succeeded=1_054, failed=22_368),
    )
    look = glance(cancelled, 1_200, {})
    # Then it says how many succeeded and failed, in the status line and in jobs list's column
    assert look.line() == "cancelled · 1,054 succeeded, 22,368 failed of 23,422 lines · 1 of 1 batches ended"
    assert look.cell() == "1,054/23,422 ok"


def test_a_round_of_failed_lines_reads_as_its_own_lines_and_batches() -> None:
    from batchdrop.models import BatchProgress
    from batchdrop_tools.follow import glance

    # Given a job whose first round has ended and whose next round waits for its backoff
    waiting = a_job(23_422, shard_count=1, collected_shards={0}, redrive_due_at=1_005)
    first = {"0": BatchProgress(round=0, status="completed", total=23_422, completed=23_411, failed=11)}
    assert glance(waiting, 1_000, first).line() == "retrying · round 1 of the failed lines starts in 5 s"

    # When round 1 has sent its 11 lines in two batches, one ended and the other not seen yet
    running = a_job(23_422, round=1, shard_count=3, started_shards={0, 1, 2}, round_lines=11, round_first_shard=1)
    seen = first | {"1": BatchProgress(round=1, status="completed", total=6, completed=6, failed=0)}
    # Then the round's figures are out of its own lines and batches, not the first round's
    assert glance(running, 1_010, seen).line().startswith("retrying · round 1 · 6 of 11 lines done · 1 of 2 batches")


def test_jobs_show_counts_the_api_requests_from_each_batch_of_every_round() -> None:
    from batchdrop.models import BatchProgress, RequestCounts, Shard, ShardState
    from batchdrop_tools.follow import describe

    # Given batches of two rounds whose last counts the poller's looks lag behind
    shards = [
        Shard(
            job_id="job-1",
            index=i,
            state=ShardState.COLLECTED,
            work_key=f"w/{i}",
            lines=n,
            bytes=1,
            first_line=1,
            round=r,
            batch_id=f"batch_{i}",
            batch_status="completed",
            request_counts=RequestCounts(total=n, completed=c, failed=n - c),
        )
        for i, r, n, c in ((0, 0, 40, 29), (1, 1, 11, 8), (2, 2, 3, 3))
    ]
    stale = {"0": BatchProgress(round=0, status="in_progress", total=40, completed=20, failed=3)}
    lines = describe(a_job(23_422, round=2, shard_count=3, started_shards={0, 1, 2}), shards, 1_100, stale)
    assert "  requests   40 completed, 14 failed of 54 (the API's counts, every round)" in lines


def test_with_no_stack_running_and_nothing_named_the_message_says_how_to_start_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Given a machine with no AWS set up and no batchdrop local running
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "TABLE_NAME", "BUCKET_NAME", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    # When a command names no stack, Then it says to start the local stack or name one, not that a region is missing
    for command in (["status", "requests"], ["jobs", "list"], ["dlq", "list"]):
        assert cli.main(command) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert "no batchdrop local is running here: start it (`batchdrop local`" in line, line
        assert "--stack-name" in line and "region" not in line.split("(and")[0]


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["submit", "x.jsonl", "--wiat"], "batchdrop submit: error: unrecognized arguments: --wiat"),
        (["dlq", "list", "--output", "json"], "batchdrop dlq: error: unrecognized arguments: --output json"),
        (["jobs", "list", "--limit", "0"], "batchdrop jobs: error: argument --limit: must be 1 or more (got 0)"),
        (["--bogus", "validate", "x"], "batchdrop: error: unrecognized arguments: --bogus"),
        (["validate", "x", "--debug"], "batchdrop: error: --debug goes before the command: batchdrop --debug validate"),
    ],
)
def test_a_mistyped_command_is_answered_with_that_commands_usage(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as ended:
        cli.main(argv)
    assert ended.value.code == 2
    err = capsys.readouterr().err
    command = "" if said.startswith("batchdrop: ") else f"{argv[0]} "
    assert err.startswith(f"usage: batchdrop {command}") and said in err.strip().splitlines()[-1]


def test_arguments_a_command_would_ignore_or_mangle_are_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert cli.main(["jobs", "list", "extra", "--local"]) == 2
    assert "takes no name (got 'extra'): `batchdrop jobs show extra` shows one" in capsys.readouterr().err
    source = tmp_path / "x.jsonl"
    source.write_text("{}\n")
    for name in ("/abs/x", "a//b.jsonl", "../x.jsonl"):
        assert cli.main(["submit", str(source), "--name", name, "--local"]) == 2
        assert "is not a key" in capsys.readouterr().err
