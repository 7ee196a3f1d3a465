"""End-to-end figures on the local stack: the real submit and collect handlers, warmed, against moto in
server mode and the ZeroGPU emulator, each in a process of its own, over real sockets.

    make bench-stack                                  # 10 MB and 100 MB
    .venv/bin/python bench/bench_stack.py --sizes 10,100,1000

For every size, a file of realistic requests (1-3 messages of 100-2,000 characters, some non-ASCII) is
generated, dropped in the bucket, and taken through the pipeline. Printed beside each pass, from the same
run on the same bytes:
- submit: the handler's wall time for the file (split, shard copies, uploads, batch creates) against the
  transfer floor: a raw streamed GET of the input from S3 plus a raw POST of the same bytes to the
  emulator's Files API (in pieces of one shard's size). The emulator's own validation of each batch at
  create (ZeroGPU validates synchronously too) is timed apart.
- collect: every collect invocation of the job (results into S3, the last one merging them into the
  outbox) against a raw streamed copy of the same result files from the API into S3.
- memory: the peak RSS growth of the handler's process over the pass, after a warm-up on a one-line
  file (ru_maxrss; nothing is traced, so the times are untouched).
Each handler pass runs in a fresh child process (as a warm Lambda instance would: imports done, a first
small job behind it); the parent delivers the events the queues hold, exactly as `batchdrop local` does.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import httpx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKET = "batchdrop-local"
MB = 1_000_000


# ---- the processes ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(argv: list[str], ready: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
    assert process.stdout is not None
    for line in process.stdout:
        if ready in line:
            return process
    raise RuntimeError(f"{argv[:3]} did not start")


# ---- realistic input ---------------------------------------------------------------------------------

_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "he",
    "this",
    "are",
    "or",
    "his",
    "from",
    "at",
    "which",
    "but",
    "have",
    "an",
    "they",
    "you",
    "were",
    "her",
    "she",
    "there",
    "been",
    "one",
    "all",
    "we",
    "their",
    "has",
    "would",
    "when",
    "if",
    "so",
    "no",
    "will",
    "each",
    "about",
    "how",
    "up",
    "out",
    "données",
    "über",
    "naïve",
    "façade",
    "café",
    "résumé",
    "東京",
    "数据",
    "分析",
    "안녕하세요",
    "Привет",
    "мир",
    "—",
    "“quoted”",
    "🙂",
]


def realistic_lines(seed: int) -> Iterator[bytes]:
    """Requests as people write them: 1-3 messages of 100-2,000 characters; about one line in five has
    non-ASCII text; a system prompt now and then; max_tokens and temperature sometimes."""
    rng = random.Random(seed)
    corpus = " ".join(rng.choice(_WORDS[:60]) for _ in range(200_000))
    accented = " ".join(rng.choice(_WORDS) for _ in range(50_000))
    n = 0
    while True:
        messages = []
        for turn in range(rng.randint(1, 3)):
            length = rng.randint(100, 2000)
            source = accented if rng.random() < 0.2 else corpus
            start = rng.randrange(0, len(source) - length)
            role = "system" if turn == 0 and rng.random() < 0.3 else ("user" if turn % 2 == 0 else "assistant")
            messages.append({"role": role, "content": source[start : start + length]})
        body: dict[str, Any] = {"model": "zgpu-small", "messages": messages}
        if rng.random() < 0.5:
            body["max_tokens"] = rng.choice((64, 256, 1024))
        if rng.random() < 0.3:
            body["temperature"] = round(rng.random(), 2)
        line = {"custom_id": f"req-{seed}-{n}", "method": "POST", "url": "/v1/chat/completions", "body": body}
        yield json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode()
        n += 1


def write_input(path: str, size: int, seed: int) -> int:
    """About `size` bytes of requests; returns the number of lines."""
    lines = 0
    with open(path, "wb") as handle:
        written = 0
        for line in realistic_lines(seed):
            handle.write(line + b"\n")
            written += len(line) + 1
            lines += 1
            if written >= size:
                break
    return lines


# ---- one handler pass in a child process ---------------------------------------------------------------

_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from batchdrop_tools.local.stack import LocalContext, quiet_logs
from batchdrop_tools.local.template import FunctionSpec
quiet_logs()
spec = json.loads(sys.argv[3])
function = FunctionSpec(**spec)
module, attribute = function.handler.rsplit(".", 1)
handler = getattr(__import__(module), attribute)
events = json.load(open(sys.argv[2]))
for warm in events["warm"]:
    handler(warm, LocalContext(function))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
usage = resource.getrusage(resource.RUSAGE_SELF)
cpu_before = usage.ru_utime + usage.ru_stime
profile = None
if sys.argv[4]:
    import cProfile
    profile = cProfile.Profile()
    profile.enable()
started = time.perf_counter()
failed = 0
for event in events["measured"]:
    reply = handler(event, LocalContext(function)) or {}
    failed += len(reply.get("batchItemFailures", []))
seconds = time.perf_counter() - started
if profile is not None:
    profile.disable()
    profile.dump_stats(sys.argv[4])
usage = resource.getrusage(resource.RUSAGE_SELF)
after = usage.ru_maxrss
cpu = usage.ru_utime + usage.ru_stime - cpu_before
print(json.dumps({"seconds": seconds, "cpu": cpu, "rss_growth_mb": (after - before) * 1024 / 1e6, "failed": failed}))
"""


def run_handler(stack: Any, logical_id: str, warm: list[dict[str, Any]], measured: list[dict[str, Any]]) -> Any:
    function = stack.function(logical_id)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as events:
        json.dump({"warm": warm, "measured": measured}, events)
    try:
        code_dir = os.path.join(REPO, function.code_uri)
        spec = json.dumps(function.__dict__)
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, code_dir, events.name, spec, _profile_path(logical_id)],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=os.environ | {"POWERTOOLS_LOG_LEVEL": "WARNING"},
        )
    finally:
        os.remove(events.name)
    if done.returncode != 0:
        raise RuntimeError(f"{logical_id} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["failed"]:
        raise RuntimeError(f"{logical_id} reported {result['failed']} failed records:\n{done.stderr[-3000:]}")
    return result


def _profile_path(logical_id: str) -> str:
    """With BENCH_PROFILE=<directory>, each measured pass is profiled (cProfile) into it; the times
    printed are then not the code's own."""
    directory = os.environ.get("BENCH_PROFILE", "")
    return os.path.join(directory, f"{logical_id}-{time.time_ns()}.pstats") if directory else ""


def take_messages(stack: Any, queue: str, wanted: int, timeout: float = 60.0) -> list[dict[str, Any]]:
    """`wanted` messages from the queue, as SQS records (left invisible: the caller deletes them)."""
    from batchdrop_tools.local.stack import _sqs_record

    sqs = stack.client("sqs")
    url, arn = stack.queue_urls[queue], stack.queue_arns[queue]
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(records) < wanted:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(records)} of {wanted} messages arrived on {queue}")
        reply = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, AttributeNames=["All"], VisibilityTimeout=3600
        )
        records += [_sqs_record(message, arn) for message in reply.get("Messages", [])]
    return records


def delete_messages(stack: Any, queue: str, records: list[dict[str, Any]]) -> None:
    sqs = stack.client("sqs")
    for record in records:
        sqs.delete_message(QueueUrl=stack.queue_urls[queue], ReceiptHandle=record["receiptHandle"])


def batches_of(records: list[dict[str, Any]], size: int) -> list[dict[str, Any]]:
    return [{"Records": records[i : i + size]} for i in range(0, len(records), size)]


# ---- the references ----------------------------------------------------------------------------------


def raw_get(s3: Any, key: str) -> float:
    started = time.perf_counter()
    body = s3.get_object(Bucket=BUCKET, Key=key)["Body"]
    while body.read(1024 * 1024):
        pass
    return time.perf_counter() - started


def raw_post(api: httpx.Client, path: str, piece: int) -> tuple[float, float]:
    """The file's bytes POSTed to the Files API in pieces of at most `piece` bytes cut at line ends (as the
    shards are), streamed from disk; and apart, the batch creates on those files (the API validates every
    line at create), each cancelled at once."""
    seconds = creates = 0.0
    with open(path, "rb") as handle:
        while True:
            with tempfile.NamedTemporaryFile(suffix=".jsonl") as part:
                taken = lines = 0
                for line in handle:
                    part.write(line)
                    taken, lines = taken + len(line), lines + 1
                    if taken + 4096 > piece or lines == 50_000:  # a batch's limits (the next line could pass)
                        break
                if not taken:
                    break
                part.flush()
                part.seek(0)
                started = time.perf_counter()
                reply = api.post("/v1/files", data={"purpose": "batch"}, files={"file": ("piece.jsonl", part)})
                seconds += time.perf_counter() - started
                reply.raise_for_status()
                started = time.perf_counter()
                batch = api.post(
                    "/v1/batches",
                    json={
                        "input_file_id": reply.json()["id"],
                        "endpoint": "/v1/chat/completions",
                        "completion_window": "24h",
                    },
                )
                creates += time.perf_counter() - started
                batch.raise_for_status()
                api.post(f"/v1/batches/{batch.json()['id']}/cancel")
    return seconds, creates


def raw_copy_to_s3(api: httpx.Client, s3: Any, file_ids: list[str]) -> tuple[float, int]:
    """Each result file streamed from the API into S3: the least collect must do."""
    from batchdrop.integrations.s3io import TRANSFER_CONFIG

    seconds, size = 0.0, 0
    for n, file_id in enumerate(file_ids):
        started = time.perf_counter()
        with api.stream("GET", f"/v1/files/{file_id}/content") as reply:
            reply.raise_for_status()
            stream = _IterStream(reply.iter_raw(1024 * 1024))
            s3.upload_fileobj(stream, BUCKET, f"bench/raw-copy/{n}.jsonl", Config=TRANSFER_CONFIG)
            size += stream.read_bytes
        seconds += time.perf_counter() - started
    return seconds, size


class _IterStream:
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks, self._pending, self.read_bytes = chunks, b"", 0

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._pending) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._pending += chunk
        out, self._pending = (self._pending, b"") if size < 0 else (self._pending[:size], self._pending[size:])
        self.read_bytes += len(out)
        return out


# ---- the passes --------------------------------------------------------------------------------------


def drop(stack: Any, path: str, key: str) -> None:
    from batchdrop.integrations.s3io import TRANSFER_CONFIG

    stack.client("s3").upload_file(path, BUCKET, key, Config=TRANSFER_CONFIG)


def job_of(stack: Any, key: str) -> tuple[Any, list[Any]]:
    """The job of the input at `key` (the newest) and its shards, from the pipeline's own store."""
    from batchdrop.integrations.store import JobStore

    store = JobStore(stack.client("dynamodb"), os.environ["TABLE_NAME"], clock=time.time)
    job = next(job for job in store.recent_jobs(limit=100) if job.input.key == key)
    return job, store.get_shards(job.job_id)


def wait_collect_requests(stack: Any, api: httpx.Client, wanted: int, timeout: float = 600.0) -> list[dict[str, Any]]:
    """The emulator answers the batches' lines (only when asked: its own work stays out of the submit
    pass), and poll runs until `wanted` collect requests are queued; then those requests."""
    from batchdrop_tools.local.stack import _sqs_record

    sqs = stack.client("sqs")
    url, arn = stack.queue_urls["CollectQueue"], stack.queue_arns["CollectQueue"]
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(records) < wanted:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(records)} of {wanted} shards ended in time")
        api.post("/_emulator/process").raise_for_status()
        stack.run_schedule_once("PollFunction")
        while True:
            reply = sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, AttributeNames=["All"], VisibilityTimeout=3600
            )
            got = [_sqs_record(message, arn) for message in reply.get("Messages", [])]
            if not got:
                break
            records += got
        time.sleep(0.5)
    return records


def measure_size(stack: Any, directory: str, megabytes: int, seed: int, warm_path: str) -> dict[str, Any]:
    s3 = stack.client("s3")
    path = os.path.join(directory, f"input-{megabytes}.jsonl")
    lines = write_input(path, megabytes * MB, seed)
    size = os.path.getsize(path)
    name = f"bench-{megabytes}mb-{seed}"
    warm_key, key = f"inbox/warm-{seed}.jsonl", f"inbox/{name}.jsonl"
    drop(stack, warm_path, warm_key)
    warm = take_messages(stack, "IngestQueue", 1)
    drop(stack, path, key)
    measured = take_messages(stack, "IngestQueue", 1)
    submit = run_handler(stack, "SubmitFunction", [{"Records": warm}], [{"Records": measured}])
    delete_messages(stack, "IngestQueue", warm + measured)

    # The references, on the same bytes, after the pass (nothing else running).
    get_seconds = min(raw_get(s3, key) for _ in range(2))
    piece = int(os.environ.get("MAX_BYTES_PER_BATCH", "100000000"))
    with httpx.Client(
        base_url=stack.api_url, headers=_api_headers(), timeout=httpx.Timeout(600.0, connect=10.0)
    ) as api:
        post_seconds, create_seconds = raw_post(api, path, piece)
        job, shards = job_of(stack, key)
        collect_requests = wait_collect_requests(stack, api, len(shards) + 1)  # + the warm job's one shard
        ours = [r for r in collect_requests if json.loads(r["body"]).get("job_id") == job.job_id]
        warm_requests = [r for r in collect_requests if r not in ours]
        batch_size = stack.function("CollectFunction").batch_size or 10
        collect = run_handler(
            stack, "CollectFunction", batches_of(warm_requests, batch_size), batches_of(ours, batch_size)
        )
        delete_messages(stack, "CollectQueue", collect_requests)
        _, shards = job_of(stack, key)
        output_ids = [shard.output_file_id for shard in shards if shard.output_file_id]
        copy_seconds, output_bytes = raw_copy_to_s3(api, s3, output_ids)
    outbox = {
        obj["Key"].rsplit("/", 1)[-1]: obj["Size"]
        for obj in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"outbox/{name}/")["Contents"]
    }
    report = json.loads(s3.get_object(Bucket=BUCKET, Key=f"outbox/{name}/report.json")["Body"].read())
    assert report["counts"]["succeeded"] == lines, report["counts"]
    os.remove(path)
    return {
        "megabytes": size / MB,
        "lines": lines,
        "shards": len(shards),
        "submit": submit,
        "get_seconds": get_seconds,
        "post_seconds": post_seconds,
        "create_seconds": create_seconds,
        "collect": collect,
        "copy_seconds": copy_seconds,
        "output_mb": (outbox.get("output.jsonl", 0) + outbox.get("errors.jsonl", 0)) / MB,
        "copy_mb": output_bytes / MB,
    }


def _api_headers() -> dict[str, str]:
    from batchdrop_tools.local.stack import LOCAL_API_KEY, LOCAL_PROJECT_ID

    return {"x-api-key": LOCAL_API_KEY, "x-project-id": LOCAL_PROJECT_ID}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10,100", help="input sizes in MB, comma-separated (1000 = 1 GB)")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]

    from batchdrop_tools.local.stack import LOCAL_API_KEY, LOCAL_PROJECT_ID, LocalStack, LocalStackConfig, quiet_logs

    quiet_logs()
    aws_port, api_port = free_port(), free_port()
    moto = start(
        [
            sys.executable,
            "-c",
            f"from batchdrop_tools.local.stack import serve_aws; serve_aws('127.0.0.1', {aws_port})",
        ],
        "ready",
    )
    emulator = start(
        [
            sys.executable,
            "-c",
            "import sys; from batchdrop_tools.cli import main; sys.exit(main(sys.argv[1:]))",
            "emulator",
            "--port",
            str(api_port),
            "--api-key",
            LOCAL_API_KEY,
            "--project-id",
            LOCAL_PROJECT_ID,
            "--manual-processing",
        ],
        "listening",
    )
    try:
        stack = LocalStack(LocalStackConfig(bucket=BUCKET, log_level="WARNING")).attach(
            f"http://127.0.0.1:{aws_port}", f"http://127.0.0.1:{api_port}"
        )
        os.environ["POWERTOOLS_LOG_LEVEL"] = "WARNING"
        with tempfile.TemporaryDirectory() as directory:
            warm_path = os.path.join(directory, "warm.jsonl")
            write_input(warm_path, 1, seed=999)
            rows = [measure_size(stack, directory, size, seed, warm_path) for seed, size in enumerate(sizes)]
    finally:
        for process in (moto, emulator):
            process.terminate()
            process.wait(timeout=30)
    print_rows(rows)


def print_rows(rows: list[dict[str, Any]]) -> None:
    print(
        f"\n{'submit':<8}{'MB':>7}{'lines':>9}{'shards':>7}{'seconds':>9}{'CPU s':>7}{'MB/s':>8}{'RSS +MB':>9}"
        f"{'GET s':>8}{'POST s':>8}{'floor MB/s':>11}{'ratio':>7}{'create s':>10}"
    )
    for r in rows:
        s = r["submit"]
        floor = r["get_seconds"] + r["post_seconds"]
        rate, floor_rate = r["megabytes"] / s["seconds"], r["megabytes"] / floor
        print(
            f"{'':<8}{r['megabytes']:>7.0f}{r['lines']:>9}{r['shards']:>7}{s['seconds']:>9.2f}{s['cpu']:>7.2f}{rate:>8.1f}"
            f"{s['rss_growth_mb']:>9.1f}{r['get_seconds']:>8.2f}{r['post_seconds']:>8.2f}{floor_rate:>11.1f}"
            f"{rate / floor_rate:>6.2f}x{r['create_seconds']:>10.2f}"
        )
    print(
        f"\n{'collect':<8}{'out MB':>7}{'seconds':>9}{'CPU s':>7}{'MB/s':>8}{'RSS +MB':>9}{'copy s':>8}"
        f"{'copy MB/s':>11}{'ratio':>7}"
    )
    for r in rows:
        c = r["collect"]
        rate, copy_rate = r["output_mb"] / c["seconds"], r["copy_mb"] / r["copy_seconds"]
        print(
            f"{'':<8}{r['output_mb']:>7.0f}{c['seconds']:>9.2f}{c['cpu']:>7.2f}{rate:>8.1f}{c['rss_growth_mb']:>9.1f}"
            f"{r['copy_seconds']:>8.2f}{copy_rate:>11.1f}{rate / copy_rate:>6.2f}x"
        )
    print(
        "\nsubmit floor: a raw GET of the input from moto plus a raw POST of the same bytes to the emulator, same"
        " run.\ncreate s: the emulator's batch creates on those uploads (it validates every line at create, as"
        " ZeroGPU does):\npart of submit's time, not of the floor.\ncollect reference: the same result files"
        " streamed from the emulator into moto (copy MB/s).\nRSS +MB: ru_maxrss growth of the handler's process"
        " over the pass, after a warm-up on a one-line file.\nCPU s: the handler process's own CPU time in the"
        " pass (what moto and the emulator spend is theirs: UploadPartCopy, say)."
    )


if __name__ == "__main__":
    main()
