"""batchdrop: drop a JSONL file of chat-completion requests, get the ZeroGPU Batch API's answers back in S3."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from typing import Any

EXAMPLES = """in the order a user meets them:
  batchdrop validate requests.jsonl                      check a file offline, line by line
  batchdrop local                                        the whole stack on this machine (another terminal)
  batchdrop submit requests.jsonl --wait                 upload it and follow the job to its end
  batchdrop status requests                              where a job is (by name, s3:// URI or job id)
  batchdrop jobs list                                    the newest jobs
  batchdrop jobs retry requests                          send a finished job's failed lines again
  batchdrop demo                                         all of it, once, on the bundled sample

On a deployed stack add --stack-name NAME (and --region/--profile as for the AWS CLI); on batchdrop local
--local, or nothing while it runs. `batchdrop COMMAND --help` says more.
"""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("batchdrop")
    except PackageNotFoundError:  # pragma: no cover - run from a checkout without installing
        return "unknown"


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchdrop", description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"batchdrop {_version()}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    emulator = commands.add_parser("emulator", help="run the ZeroGPU Batch API emulator as an HTTP server")
    from batchdrop_tools.emulator.server import add_arguments as add_emulator_arguments

    add_emulator_arguments(emulator)

    local = commands.add_parser("local", help="run the whole stack on this machine (moto + emulator)")
    local.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address both servers listen on (default: %(default)s; 0.0.0.0 for Docker)",
    )
    local.add_argument(
        "--aws-port", type=int, default=4566, help="the port of the AWS endpoint, moto (default: %(default)s)"
    )
    local.add_argument(
        "--emulator-port", type=int, default=8400, help="the port of the ZeroGPU API emulator (default: %(default)s)"
    )
    local.add_argument(
        "--poll-seconds", type=float, default=1.0, help="how often the poll function runs (default: %(default)s s)"
    )
    local.add_argument(
        "--log-level",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        default="INFO",
        help="the handlers' log level (INFO: what moves; an idle poll run is DEBUG)",
    )
    local.add_argument("--quiet", action="store_true", help="only warnings and errors (--log-level WARNING)")
    local.add_argument(
        "--upstream", metavar="URL", help="an OpenAI-compatible server the emulator runs each line against"
    )
    local.add_argument(
        "--webhook-url",
        help="the stack's WebhookUrl: each Batch Job Finished it would receive is printed (moto delivers none)",
    )
    local.add_argument(
        "--lines-per-second",
        type=_positive_float,
        default=None,
        help="the emulator's speed per batch, to watch progress (default: every line answered at once)",
    )

    demo = commands.add_parser("demo", help="one end-to-end run on the local stack")
    demo.add_argument("file", nargs="?", help="a JSONL file of requests (the bundled sample if omitted)")
    demo.add_argument("--api-url", help="use this ZeroGPU API (ZGPU_API_KEY, ZGPU_PROJECT_ID) instead of the emulator")
    demo.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the job to finish")
    demo.add_argument(
        "--lines-per-second",
        type=_positive_float,
        default=None,
        help="the emulator's speed per batch (default: every line answered at once)",
    )
    from batchdrop_tools import submit as submit_module

    submit = commands.add_parser(
        "submit",
        help="upload a JSONL file to the stack's inbox; with --wait, follow the job to its end",
        description=(submit_module.__doc__ or "").split("\n\nexamples:")[0],
        epilog="examples:" + (submit_module.__doc__ or "").split("\n\nexamples:")[-1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    submit_module.add_submit_arguments(submit)
    status = commands.add_parser(
        "status",
        help="where a job is: by job id, s3:// URI or name",
        description="Where a job is: its status, lines done, batches, time left, and where its files are.",
        epilog="examples:\n  batchdrop status requests --local\n  batchdrop status s3://my-bucket/inbox/requests.jsonl "
        "--stack-name batchdrop-prod",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    submit_module.add_status_arguments(status)
    demo.add_argument(
        "--keep", action="store_true", help="leave the local stack running after the run (Ctrl-C stops it)"
    )
    jobs = commands.add_parser("jobs", help="list, show, watch, cancel or retry jobs")
    from batchdrop_tools.jobs import add_arguments as add_jobs_arguments

    add_jobs_arguments(jobs)
    validate = commands.add_parser("validate", help="check JSONL files as the pipeline would, offline")
    from batchdrop_tools.validate import add_arguments as add_validate_arguments

    add_validate_arguments(validate)
    dlq = commands.add_parser("dlq", help="list what is dead-lettered, or send it back (operators)")
    from batchdrop_tools.dlq import add_arguments as add_dlq_arguments

    add_dlq_arguments(dlq)
    examples = {
        emulator: "examples:\n  batchdrop emulator --port 8400\n  batchdrop emulator --upstream http://127.0.0.1:8000"
        " --lines-per-second 5",
        local: "examples:\n  batchdrop local\n  batchdrop local --quiet --lines-per-second 20"
        "\n  batchdrop local --host 0.0.0.0    (for sam local invoke; see the README)",
        demo: "examples:\n  batchdrop demo\n  batchdrop demo my-requests.jsonl --keep",
        validate: "examples:\n  batchdrop validate requests.jsonl\n  batchdrop validate exports/*.jsonl.gz"
        "\nexit codes: 0 every file is good, 1 a file has problems, 2 a file cannot be read",
        dlq: "examples:\n  batchdrop dlq list --queue ingest --stack-name batchdrop-prod"
        "\n  batchdrop dlq redrive --queue collect --local",
    }
    for command, text in examples.items():
        command.epilog = text
        command.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


def _refuse(parser: argparse.ArgumentParser, argv: list[str], command: str, extra: list[str]) -> None:
    """Unknown arguments, said by the parser they were given to: the command's (with its usage) for
    those after its name, the top level's for those before it; --debug after the command is moved."""
    if "--debug" in extra:
        parser.error(f"--debug goes before the command: batchdrop --debug {command} ...")
    after = argv[argv.index(command) + 1 :] if command in argv else []
    if all(arg in after for arg in extra):
        _command_parser(parser, command).error(f"unrecognized arguments: {' '.join(extra)}")
    parser.error(f"unrecognized arguments: {' '.join(extra)}")


def _command_parser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser = action.choices[command]
            return found
    return parser  # pragma: no cover - every command is a subparser


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


class _ReaderMayLeave:
    """stdout whose reader may go away (`batchdrop validate x.jsonl | head -1`): what is written after
    that is dropped instead of raising, so the command still finishes and exits with the code of what
    it found (a script with `set -o pipefail` reads the right one)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.gone = False

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                self._stream.write(text)
            except BrokenPipeError:
                self.leave()
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self.leave()

    def leave(self) -> None:
        """The reader has gone: drop what is written from now on."""
        if self.gone:
            return
        self.gone = True
        # what the stream still holds goes nowhere when Python flushes it at exit, instead of failing again
        with contextlib.suppress(OSError, ValueError):  # not a file (a test's capture)
            os.dup2(os.open(os.devnull, os.O_WRONLY), self._stream.fileno())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main(argv: Sequence[str] | None = None) -> int:
    args = argparse.Namespace(debug=False, command="")
    stdout = sys.stdout
    sys.stdout = output = _ReaderMayLeave(stdout)
    try:
        parser = _build_parser()
        args, extra = parser.parse_known_args(argv)
        if extra:
            _refuse(parser, list(sys.argv[1:] if argv is None else argv), args.command, extra)
        return _run(args)
    except BrokenPipeError:
        # a write that went around the wrapper: the reader has gone; nothing more to say, nor to flush
        output.leave()
        return 0
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        if args.debug:
            sys.excepthook = sys.__excepthook__  # a plain traceback: the handlers' logger prints one line of JSON
            raise
        message = _one_line(error)
        if message is None:
            raise
        print(f"batchdrop {args.command}: {message}".replace("batchdrop : ", "batchdrop: "), file=sys.stderr)
        return 2
    finally:
        sys.stdout = stdout


def _one_line(error: Exception) -> str | None:
    """What went wrong and what to do, for the errors a person's setup causes (None: a bug; it is raised)."""
    from boto3.exceptions import S3UploadFailedError
    from botocore import exceptions as aws

    from batchdrop_tools.target import TargetError

    if isinstance(error, TargetError):
        return str(error)
    if isinstance(error, S3UploadFailedError):  # boto3's transfer wraps the S3 error in one line of its own
        return (
            f"{str(error).splitlines()[0]}: check the bucket (--bucket, --stack-name or --local) and that "
            "you may write under its input prefix"
        )
    if isinstance(error, aws.ProfileNotFound):
        return f"{error}: check --profile (or $AWS_PROFILE) against `aws configure list-profiles`"
    if isinstance(error, aws.NoRegionError):
        return "no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION), or configure one with `aws configure`"
    if isinstance(error, aws.NoCredentialsError | aws.PartialCredentialsError):
        return (
            "no AWS credentials: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(any values do for batchdrop local's --endpoint-url)"
        )
    if isinstance(error, aws.EndpointConnectionError):
        where = error.kwargs.get("endpoint_url", "the AWS endpoint")
        return f"cannot reach {where}: is batchdrop local running, or is --endpoint-url right?"
    if isinstance(error, aws.ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        text = error.response.get("Error", {}).get("Message", "")
        if code == "ResourceNotFoundException":
            return (
                f"{text or 'not found'}: check --table (the stack output TableName; "
                "batchdrop-local-jobs on batchdrop local)"
            )
        return f"AWS said {code}: {text} (--debug shows where)"
    return None


def _run(args: argparse.Namespace) -> int:
    if args.command == "emulator":
        from batchdrop_tools.emulator.server import serve

        return serve(args)
    if args.command == "submit":
        from batchdrop_tools.submit import run_submit

        return run_submit(args)
    if args.command == "status":
        from batchdrop_tools.submit import run_status

        return run_status(args)
    if args.command == "jobs":
        from batchdrop_tools.jobs import run

        return run(args)
    if args.command == "validate":
        from batchdrop_tools.validate import run as run_validate

        return run_validate(args)
    if args.command == "dlq":
        from batchdrop_tools.dlq import run as run_dlq

        return run_dlq(args)
    if args.command == "local":
        from batchdrop_tools.local.stack import run_local

        return run_local(args)
    from batchdrop_tools.local.demo import run_demo

    return run_demo(args)


if __name__ == "__main__":
    sys.exit(main())
