"""`batchdrop local`: the whole stack on one machine.

- AWS is moto in server mode, bound to the given host; the AWS CLI and SDKs work against it unchanged.
- Its resources are derived from template.yaml (the bucket with EventBridge notifications, the table and
  its index, the queues and their dead-letter queues, the rules with their patterns, the topic, the secret).
- The ZeroGPU API is the emulator, on a real port (or a real API, given its URL and credentials).
- The real handlers of functions/ are fed what Lambda would deliver: SQS batches from the ingest and
  collect queues (with partial batch failures honoured) and the scheduled poll event.

The stack sets the handlers' environment in this process (AWS_ENDPOINT_URL and the functions'
variables), so it is meant to own its process, as `batchdrop local` and `batchdrop demo` do.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from batchdrop_tools.local.moto_fixes import install as install_moto_fixes
from batchdrop_tools.local.template import (
    FunctionSpec,
    LocalResources,
    derive_local_resources,
    find_template,
    load_template,
)
from batchdrop_tools.ports import check_port_free

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
LOCAL_API_KEY = "zgpu-local-emulator-key"
LOCAL_PROJECT_ID = "00000000-0000-4000-8000-000000000000"
# A failed record is retried after this long locally (Lambda would wait for the visibility timeout).
LOCAL_RETRY_SECONDS = 5

log = logging.getLogger("batchdrop_tools.local")


@dataclass
class LocalStackConfig:
    host: str = "127.0.0.1"
    aws_port: int = 4566
    emulator_port: int = 8400
    poll_seconds: float = 1.0
    bucket: str = "batchdrop-local"
    api_url: str | None = None
    """A real ZeroGPU API instead of the emulator (with api_key and project_id)."""
    api_key: str | None = None
    project_id: str | None = None
    lines_per_second: float | None = None
    """The emulator's speed per batch: None answers every line at once; a number lets progress be watched."""
    upstream: str | None = None
    """An OpenAI-compatible server the emulator runs each line against (instead of echoing)."""
    log_level: str = "INFO"
    """The handlers' log level (their JSON logs go to standard output)."""
    webhook_url: str | None = None
    """The template's WebhookUrl: moto delivers no API destinations, so each Batch Job Finished the webhook
    would receive is printed instead."""


class _SerializedMotoServer(ThreadedMotoServer):
    """moto's server, taking DynamoDB requests one at a time (that backend is not safe for concurrent
    requests: see moto_fixes.py; the others are left concurrent, SQS's long polls among them), and failing
    fast if its port cannot be bound instead of hanging."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._start_error: BaseException | None = None

    def _server_entry(self) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        app = DomainDispatcherApplication(create_backend_app)
        lock = threading.Lock()

        def one_at_a_time(environ: dict[str, Any], start_response: Any) -> Any:
            if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB"):
                return app(environ, start_response)
            with lock:
                return list(app(environ, start_response))

        try:
            self._server = make_server(
                self._ip_address, self._port, one_at_a_time, True, request_handler=MotoRequestHandler
            )
        except BaseException as error:  # reported by start(); without this, start() waits forever
            self._start_error = error
            self._server_ready_event.set()
            return
        self._server_ready_event.set()
        self._server.serve_forever()

    def start(self) -> None:
        super().start()
        if self._start_error is not None:
            raise self._start_error


class LocalContext:
    """What the handlers read of a Lambda context."""

    def __init__(self, function: FunctionSpec) -> None:
        self.function_name = f"batchdrop-local-{function.logical_id}"
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{self.function_name}"
        self.memory_limit_in_mb = 1024
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + function.timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class LocalStack:
    def __init__(self, config: LocalStackConfig) -> None:
        self.config = config
        self.resources: LocalResources | None = None
        self.queue_urls: dict[str, str] = {}
        self.topic_arns: dict[str, str] = {}
        self.table_name = ""
        self.queue_arns: dict[str, str] = {}
        self._moto: ThreadedMotoServer | None = None
        self._emulator_server: Any = None
        self._stop = threading.Event()
        self._webhook_queue_url = ""
        self._threads: list[threading.Thread] = []
        # One invocation at a time: the handlers share Powertools' process-wide logger, whose
        # invocation keys would mix between threads (on Lambda each function has its own process).
        self._invocation = threading.Lock()
        self.endpoint_url = ""
        self.api_url = ""

    # lifecycle

    def start(self) -> LocalStack:
        """Raises PortUnavailable (naming the port and its flag) before anything starts if a port is taken."""
        ports = [(self.config.aws_port, "--aws-port")]
        if not self.config.api_url:
            ports.append((self.config.emulator_port, "--emulator-port"))
        for port, flag in ports:
            check_port_free(self.config.host, port, flag, "another batchdrop local or LocalStack")
        install_moto_fixes()
        self._moto = _SerializedMotoServer(ip_address=self.config.host, port=self.config.aws_port, verbose=False)
        self._moto.start()
        host, port = self._moto.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        _point_clients_at(self.endpoint_url)
        self.api_url = self.config.api_url or self._start_emulator()
        self._create_resources()
        self._start_workers()
        return self

    def attach(self, endpoint_url: str, api_url: str) -> LocalStack:
        """The stack's resources on a moto server and an API that run elsewhere (other processes, as in
        the benchmarks), with the handlers' environment set in this process; no worker is started: the
        caller delivers events with `drain` and `run_schedule_once`."""
        install_moto_fixes()
        self.endpoint_url, self.api_url = endpoint_url, api_url
        _point_clients_at(endpoint_url)
        self._create_resources()
        return self

    def function(self, logical_id: str) -> FunctionSpec:
        assert self.resources is not None, "start() or attach() first"
        return self.resources.functions[logical_id]

    def drain(self, logical_id: str, *, wait_seconds: int = 1) -> int:
        """Delivers the function's queue to its handler, one SQS batch per invocation as Lambda would,
        until the queue stays empty for `wait_seconds`; returns the number of records delivered."""
        function = self.function(logical_id)
        handler = _load_handler(function)
        delivered = 0
        while batch := self._deliver_batch(function, handler, self.client("sqs"), wait_seconds):
            delivered += batch
        return delivered

    def run_schedule_once(self, logical_id: str) -> Any:
        """One run of a scheduled function, with what EventBridge Scheduler would deliver."""
        function = self.function(logical_id)
        return _load_handler(function)(_scheduled_event(function), LocalContext(function))

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        if self._emulator_server is not None:
            self._emulator_server.stop()
            self._emulator_server.emulator.close()
        if self._moto is not None:
            self._moto.stop()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def client(self, service: str) -> Any:
        create: Any = boto3.client  # the service is named at run time
        return create(service, endpoint_url=self.endpoint_url, region_name=REGION)

    # the parts

    def _start_emulator(self) -> str:
        from batchdrop_tools.emulator import Emulator, EmulatorSettings, SkewableClock
        from batchdrop_tools.emulator.backends import UpstreamBackend
        from batchdrop_tools.emulator.server import EmulatorServer

        emulator = Emulator(
            backend=UpstreamBackend(self.config.upstream) if self.config.upstream else None,
            settings=EmulatorSettings(
                api_key=LOCAL_API_KEY,
                project_id=LOCAL_PROJECT_ID,
                lines_per_second=self.config.lines_per_second,
            ),
            clock=SkewableClock(),  # POST /_emulator/advance: a day passes at the API, to watch an expiry
        )
        emulator.app.health = self.health
        self._emulator_server = EmulatorServer(emulator, self.config.host, self.config.emulator_port).start()
        return str(self._emulator_server.url)

    def health(self) -> dict[str, Any]:
        """GET <emulator>/_emulator/health: whether every part of the stack runs (503 if one does not)."""
        workers = {thread.name.removeprefix("local-"): thread.is_alive() for thread in self._threads}
        try:
            self.client("s3").head_bucket(Bucket=self.config.bucket)
            aws = True
        except Exception:
            aws = False
        healthy = aws and all(workers.values()) and not self._stop.is_set()
        return {"status": "ok" if healthy else "failing", "aws": aws, "workers": workers}

    def _create_resources(self) -> None:
        template = load_template(find_template())
        bucket = self.config.bucket
        first = derive_local_resources(template, bucket_name=bucket)
        s3, sqs, sns = self.client("s3"), self.client("sqs"), self.client("sns")
        dynamodb, events, secrets = (
            self.client("dynamodb"),
            self.client("events"),
            self.client("secretsmanager"),
        )
        names: dict[str, str] = {}

        s3.create_bucket(Bucket=bucket)
        if first.bucket.versioning:
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        if first.bucket.eventbridge:
            s3.put_bucket_notification_configuration(
                Bucket=bucket, NotificationConfiguration={"EventBridgeConfiguration": {}}
            )

        table_name = "batchdrop-local-jobs"
        names["JobsTable"] = table_name
        table = derive_local_resources(template, bucket_name=bucket, names=names).table
        dynamodb.create_table(**(table.create_table_kwargs | {"TableName": table_name}))
        if table.ttl_attribute:
            dynamodb.update_time_to_live(
                TableName=table_name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": table.ttl_attribute},
            )

        # Dead-letter queues first: the others' redrive policies name them.
        for spec in sorted(first.queues.values(), key=lambda queue: queue.dead_letter_queue is not None):
            attributes = dict(spec.attributes)
            if spec.dead_letter_queue:
                attributes["RedrivePolicy"] = json.dumps(
                    {
                        "deadLetterTargetArn": self.queue_arns[spec.dead_letter_queue],
                        "maxReceiveCount": spec.max_receive_count or 5,
                    }
                )
            url = sqs.create_queue(QueueName=f"batchdrop-local-{spec.logical_id}", Attributes=attributes)["QueueUrl"]
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            self.queue_urls[spec.logical_id], self.queue_arns[spec.logical_id] = url, arn
            names[spec.logical_id] = url
            names[f"{spec.logical_id}.Arn"] = arn
            names[f"{spec.logical_id}.QueueUrl"] = url
            names[f"{spec.logical_id}.QueueName"] = url.rsplit("/", 1)[-1]

        for logical_id in first.topics:
            arn = sns.create_topic(Name=f"batchdrop-local-{logical_id}")["TopicArn"]
            names[logical_id] = arn
            names[f"{logical_id}.TopicArn"] = arn
            self.topic_arns[logical_id] = arn
        self.table_name = table_name

        credentials = {
            "api_key": self.config.api_key or LOCAL_API_KEY,
            "project_id": self.config.project_id or ("" if self.config.api_url else LOCAL_PROJECT_ID),
        }
        for logical_id in first.secrets or {"ApiSecret": ""}:
            arn = secrets.create_secret(Name=f"batchdrop-local/{logical_id}", SecretString=json.dumps(credentials))[
                "ARN"
            ]
            names[logical_id] = arn

        self.resources = derive_local_resources(template, bucket_name=bucket, names=names)
        for rule in self.resources.rules.values():
            if rule.event_bus_name != "default":
                with contextlib.suppress(events.exceptions.ResourceAlreadyExistsException):
                    events.create_event_bus(Name=rule.event_bus_name)
            events.put_rule(
                Name=f"batchdrop-local-{rule.logical_id}",
                EventBusName=rule.event_bus_name,
                EventPattern=json.dumps(rule.event_pattern),
            )
            target: dict[str, Any] = {"Id": "ingest", "Arn": self.queue_arns[rule.target_queue]}
            if rule.dead_letter_queue:
                target["DeadLetterConfig"] = {"Arn": self.queue_arns[rule.dead_letter_queue]}
            events.put_targets(
                Rule=f"batchdrop-local-{rule.logical_id}", EventBusName=rule.event_bus_name, Targets=[target]
            )
        if self.config.webhook_url:
            self._route_webhook_events(events)
        self._set_function_environment()

    def _route_webhook_events(self, events: Any) -> None:
        """What template.yaml's WebhookRule matches, into a queue of ours that `_print_webhook_events` drains."""
        sqs = self.client("sqs")
        url = sqs.create_queue(QueueName="batchdrop-local-webhook")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        bus = (
            next((rule.event_bus_name for rule in self.resources.rules.values()), "default")
            if self.resources
            else "default"
        )
        events.put_rule(
            Name="batchdrop-local-WebhookRule",
            EventBusName=bus,
            EventPattern=json.dumps({"source": ["batchdrop"], "detail-type": ["Batch Job Finished"]}),
        )
        events.put_targets(
            Rule="batchdrop-local-WebhookRule", EventBusName=bus, Targets=[{"Id": "webhook", "Arn": arn}]
        )
        self._webhook_queue_url = url

    def _print_webhook_events(self) -> None:
        sqs = self.client("sqs")
        while not self._stop.is_set():
            reply = sqs.receive_message(QueueUrl=self._webhook_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            for message in reply.get("Messages", []):
                print(
                    f"webhook (not delivered: moto has no API destinations): would POST {self.config.webhook_url} "
                    f"{message['Body']}",
                    flush=True,
                )
                sqs.delete_message(QueueUrl=self._webhook_queue_url, ReceiptHandle=message["ReceiptHandle"])

    def _set_function_environment(self) -> None:
        assert self.resources is not None
        for function in self.resources.functions.values():
            os.environ.update({name: value for name, value in function.environment.items() if value is not None})
        os.environ.update(
            {
                "API_BASE_URL": self.api_url,
                "POLL_MIN_INTERVAL_SECONDS": "1",
                "POLL_MAX_INTERVAL_SECONDS": "5",
                "REDRIVE_BACKOFF_SECONDS": "2",
                "STATUS_INTERVAL_SECONDS": "2",
                "STUCK_AFTER_MINUTES": "1",
                "SECRET_MAX_AGE_SECONDS": "5",
                "POWERTOOLS_METRICS_DISABLED": "true",
                "POWERTOOLS_TRACE_DISABLED": "true",
                "POWERTOOLS_LOG_LEVEL": self.config.log_level,
            }
        )
        from batchdrop.observability import logger

        logger.setLevel(self.config.log_level)
        # metrics are off here: a run that counted nothing is not worth a warning
        warnings.filterwarnings("ignore", message="No application metrics to publish", category=UserWarning)

    # the event sources

    def _start_workers(self) -> None:
        assert self.resources is not None
        for function in self.resources.functions.values():
            handler = _load_handler(function)
            if function.sqs_queue:
                worker: Callable[[], None] = _bind(self._consume_queue, function, handler)
            elif function.schedule_expression:
                worker = _bind(self._run_schedule, function, handler)
            else:
                continue
            thread = threading.Thread(target=worker, name=f"local-{function.logical_id}", daemon=True)
            thread.start()
            self._threads.append(thread)
        if self.config.webhook_url:
            thread = threading.Thread(target=self._print_webhook_events, name="local-webhook", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _consume_queue(self, function: FunctionSpec, handler: Callable[..., Any]) -> None:
        sqs = self.client("sqs")
        while not self._stop.is_set():
            try:
                self._deliver_batch(function, handler, sqs, 1)
            except Exception:  # the server is shutting down
                if self._stop.is_set():
                    return
                raise

    def _deliver_batch(self, function: FunctionSpec, handler: Callable[..., Any], sqs: Any, wait_seconds: int) -> int:
        """One receive from the function's queue and, if it got anything, one invocation: records it
        reports failed are made visible again after LOCAL_RETRY_SECONDS, the others deleted."""
        assert function.sqs_queue is not None
        queue_url, queue_arn = self.queue_urls[function.sqs_queue], self.queue_arns[function.sqs_queue]
        messages = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=min(10, function.batch_size or 10),
            WaitTimeSeconds=wait_seconds,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            return 0
        event = {"Records": [_sqs_record(message, queue_arn) for message in messages]}
        try:
            with self._invocation:
                reply = handler(event, LocalContext(function)) or {}
            failed = {failure["itemIdentifier"] for failure in reply.get("batchItemFailures", [])}
        except Exception:
            log.exception("%s failed; its records will be retried", function.logical_id)
            failed = {message["MessageId"] for message in messages}
        for message in messages:
            if message["MessageId"] in failed:
                sqs.change_message_visibility(
                    QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=LOCAL_RETRY_SECONDS
                )
            else:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        return len(messages)

    def _run_schedule(self, function: FunctionSpec, handler: Callable[..., Any]) -> None:
        while not self._stop.wait(self.config.poll_seconds):
            try:
                with self._invocation:
                    handler(_scheduled_event(function), LocalContext(function))
            except Exception:
                log.exception("%s failed; the next run retries", function.logical_id)


def _scheduled_event(function: FunctionSpec) -> Any:
    """What EventBridge Scheduler delivers: the schedule's Input with its placeholders filled in."""
    schedule_arn = f"arn:aws:scheduler:{REGION}:{ACCOUNT_ID}:schedule/default/batchdrop-local-poll"
    filled = {
        "<aws.scheduler.schedule-arn>": schedule_arn,
        "<aws.scheduler.scheduled-time>": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "<aws.scheduler.execution-id>": uuid.uuid4().hex[:16],
        "<aws.scheduler.attempt-number>": "1",
    }
    text = function.schedule_input or "{}"
    for placeholder, value in filled.items():
        text = text.replace(placeholder, value)
    return json.loads(text)


def _point_clients_at(endpoint_url: str) -> None:
    """Every AWS client this process makes (the handlers' among them) goes to the local moto server."""
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": endpoint_url,
            "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "local"),
            "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "local"),
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
        }
    )
    os.environ.pop("AWS_PROFILE", None)


def serve_aws(host: str, port: int) -> None:
    """The local stack's moto server alone, until interrupted (for a benchmark's separate process)."""
    install_moto_fixes()
    server = _SerializedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    print("ready", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()


def _bind(method: Callable[..., None], *args: Any) -> Callable[[], None]:
    return lambda: method(*args)


def _sqs_record(message: dict[str, Any], queue_arn: str) -> dict[str, Any]:
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": message.get("MessageAttributes", {}),
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
    }


def _load_handler(function: FunctionSpec) -> Callable[..., Any]:
    """The real handler module from the function's CodeUri, imported as Lambda would."""
    code_dir = str(find_template().parent / function.code_uri)
    if code_dir not in sys.path:
        sys.path.insert(0, code_dir)
    module_name, attribute = function.handler.rsplit(".", 1)
    handler: Callable[..., Any] = getattr(importlib.import_module(module_name), attribute)
    return handler


def run_local(args: Any) -> int:
    """The `batchdrop local` command: runs until interrupted."""
    quiet_logs()
    log_level = "WARNING" if args.quiet else args.log_level
    config = LocalStackConfig(
        log_level=log_level,
        host=args.host,
        aws_port=args.aws_port,
        emulator_port=args.emulator_port,
        poll_seconds=args.poll_seconds,
        lines_per_second=args.lines_per_second,
        webhook_url=args.webhook_url,
        upstream=args.upstream,
    )
    stack = LocalStack(config)
    try:
        stack.start()
    except OSError as error:
        print(f"batchdrop local: cannot start: {error}", file=sys.stderr)
        stack.stop()
        return 1
    bucket = config.bucket
    print(f"AWS endpoint (moto):   {stack.endpoint_url}   (any credentials, region {REGION})")
    print(
        f"  export AWS_ENDPOINT_URL={stack.endpoint_url} AWS_REGION={REGION} "
        "AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local"
    )
    if config.api_url:
        print(f"ZeroGPU API:           {stack.api_url}")
    else:
        print(
            f"ZeroGPU API (emulator): {stack.api_url}   (key {LOCAL_API_KEY}, project {LOCAL_PROJECT_ID}: not secrets)"
        )
        if config.upstream:
            print(f"  its lines run on:    {config.upstream}")
        print(f"Health:                {stack.api_url}/_emulator/health")
    print(f"Bucket:                s3://{bucket}   (inputs under inbox/, results under outbox/)")
    print(
        f"Jobs table:            {stack.table_name}   "
        f"(batchdrop jobs list --table {stack.table_name} --endpoint-url {stack.endpoint_url})"
    )
    for logical_id, url in sorted(stack.queue_urls.items()):
        print(f"Queue {logical_id + ':':<22} {url}")
    for logical_id, arn in sorted(stack.topic_arns.items()):
        print(f"Topic {logical_id + ':':<22} {arn}")
    print("Try:  batchdrop submit x.jsonl --wait      (batchdrop finds this stack while it runs)")
    print(f"  or: aws --endpoint-url {stack.endpoint_url} s3 cp x.jsonl s3://{bucket}/inbox/x.jsonl")
    print(f"Then: aws --endpoint-url {stack.endpoint_url} s3 cp s3://{bucket}/outbox/x/report.json -")
    if config.webhook_url:
        print(
            f"Webhook:               {config.webhook_url}   (printed here, not delivered: moto has no API destinations)"
        )
    print("State is kept in memory: it is gone when this command stops.")
    from batchdrop_tools.target import withdraw_local

    announce(stack, bucket)
    print("ready", flush=True)
    stopped = threading.Event()
    try:
        import signal

        signal.signal(signal.SIGTERM, lambda *_: stopped.set())
        while not stopped.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        withdraw_local()
        stack.stop()
    return 0


def announce(stack: LocalStack, bucket: str) -> None:
    """Tells the command line where this stack is, so that its commands find it while it runs
    (target.running_local); withdrawn by target.withdraw_local."""
    from batchdrop_tools.target import announce_local

    announce_local(
        {
            "endpoint_url": stack.endpoint_url,
            "region": REGION,
            "bucket": bucket,
            "table": stack.table_name,
            "input_prefix": "inbox/",
            "output_prefix": "outbox/",
            "queues": dict(stack.queue_urls),
            "api_url": stack.api_url,
        }
    )


def quiet_logs() -> None:
    """Only what matters on the console: the handlers' own JSON logs and this module's messages."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    logging.getLogger("batchdrop").propagate = False  # the handlers' JSON lines, once (not again as plain text)
    for noisy in ("werkzeug", "botocore", "boto3", "urllib3", "httpx", "moto"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
