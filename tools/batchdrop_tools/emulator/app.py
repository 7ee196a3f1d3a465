"""The WSGI app: ZeroGPU's `/v1` routes, auth, injected faults, and the `/_emulator` admin surface."""

from __future__ import annotations

import contextlib
import hmac
import json
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response
from werkzeug.wsgi import wrap_file

from batchdrop_tools.emulator import errors, ids
from batchdrop_tools.emulator.engine import Engine
from batchdrop_tools.emulator.errors import ApiError
from batchdrop_tools.emulator.faults import Fault, FaultPlan, Faults
from batchdrop_tools.emulator.inprocess import current_call
from batchdrop_tools.emulator.settings import EmulatorSettings
from batchdrop_tools.emulator.uploads import receive_upload

StartResponse = Callable[..., Any]
Advance = Callable[[float], float]

_MAX_JSON_BODY = 1024 * 1024
_FILES_MAX_LIMIT = 10_000
_BATCHES_MAX_LIMIT = 100
_BATCHES_DEFAULT_LIMIT = 20

_API_ROUTES = Map(
    [
        Rule("/v1/files", methods=["POST"], endpoint="upload_file"),
        Rule("/v1/files", methods=["GET"], endpoint="list_files"),
        Rule("/v1/files/<file_id>", methods=["GET"], endpoint="retrieve_file"),
        Rule("/v1/files/<file_id>", methods=["DELETE"], endpoint="delete_file"),
        Rule("/v1/files/<file_id>/content", methods=["GET"], endpoint="file_content"),
        Rule("/v1/batches", methods=["POST"], endpoint="create_batch"),
        Rule("/v1/batches", methods=["GET"], endpoint="list_batches"),
        Rule("/v1/batches/<batch_id>", methods=["GET"], endpoint="retrieve_batch"),
        Rule("/v1/batches/<batch_id>/cancel", methods=["POST"], endpoint="cancel_batch"),
    ],
    strict_slashes=False,
    merge_slashes=False,
)
_ADMIN_PREFIX = "/_emulator/"


@dataclass(frozen=True)
class CallRecord:
    """One API request the emulator received (admin requests are not recorded)."""

    method: str
    path: str
    status: int
    request_id: str
    at: float
    fault: str | None = None


class CallLog:
    """The recorded calls; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: list[CallRecord] = []

    def record(self, call: CallRecord) -> None:
        with self._lock:
            self._calls.append(call)

    def all(self) -> list[CallRecord]:
        with self._lock:
            return list(self._calls)


class EmulatorApp:
    """The WSGI callable. Every request first lets processing catch up with the clock."""

    def __init__(
        self,
        engine: Engine,
        faults: Faults,
        settings: EmulatorSettings,
        calls: CallLog,
        advance: Advance | None,
    ) -> None:
        self.engine = engine
        self.faults = faults
        self.settings = settings
        self.calls = calls
        self._advance = advance
        self.health: Callable[[], dict[str, Any]] = lambda: {"status": "ok"}
        """GET /_emulator/health: the emulator's by default; `batchdrop local` adds its workers' and moto's."""

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        request_id = ids.request_id()
        if request.path.startswith(_ADMIN_PREFIX):
            response = self._guard(lambda: self._admin(request))
            lost = False
        else:
            response, lost = self._api(request, request_id)
        response.headers["x-request-id"] = request_id
        if lost:
            call = current_call()
            if call is not None:
                call.reply_lost = True
            else:
                _drop_connection(environ, self.settings.reply_lost_delay)
        return response(environ, start_response)

    # ---- /v1 -----------------------------------------------------------------------------------

    def _api(self, request: Request, request_id: str) -> tuple[Response, bool]:
        if not self.settings.manual_processing:
            self.engine.process(blocking=False)
        method, path = request.method, request.path
        plan = self.faults.take(method, path)
        timed_out = _wait(plan.delay)
        response = _fault_response(plan.http) if plan.http else self._guard(lambda: self._handle(request))
        self.calls.record(
            CallRecord(method, path, response.status_code, request_id, self.engine.clock.now(), _fault_name(plan))
        )
        return response, plan.reply_lost or timed_out

    def _guard(self, handle: Callable[[], Response]) -> Response:
        try:
            return handle()
        except ApiError as error:
            return _error_response(error)
        except Exception:
            traceback.print_exc(file=sys.stderr)
            return _error_response(ApiError(500, "Internal server error", type=errors.INTERNAL, code=None))

    def _handle(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return _preflight()
        self._authenticate(request)
        adapter = _API_ROUTES.bind_to_environ(request.environ)
        try:
            endpoint, arguments = adapter.match()
        except MethodNotAllowed as error:
            raise ApiError(405, f"Method {request.method} not allowed on {request.path}", code=None) from error
        except (NotFound, HTTPException):
            raise errors.not_found_route(request.method, request.path) from None
        handler: Callable[..., Response] = getattr(self, f"_{endpoint}")
        return handler(request, **arguments)

    def _authenticate(self, request: Request) -> None:
        key = request.headers.get("x-api-key", "")
        project = request.headers.get("x-project-id", "")
        if not key or (self.settings.require_project_id and not project):
            raise ApiError(401, "Missing authentication headers", type=errors.AUTHENTICATION)
        wrong_key = self.settings.api_key is not None and not hmac.compare_digest(
            key.encode(), self.settings.api_key.encode()
        )
        wrong_project = self.settings.project_id is not None and bool(project) and project != self.settings.project_id
        if wrong_key or wrong_project:
            raise ApiError(403, "Invalid credentials", type=errors.AUTHENTICATION)

    def _upload_file(self, request: Request) -> Response:
        upload = receive_upload(request.environ, self.engine.storage, self.settings.max_upload_bytes)
        assert upload.path is not None
        return _json(self.engine.add_upload(upload.path, upload.filename, upload.size))

    def _list_files(self, request: Request) -> Response:
        purpose = request.args.get("purpose")
        if purpose is not None and purpose not in ("batch", "batch_output"):
            raise ApiError(400, f"Invalid purpose {purpose!r}", code="invalid_purpose", param="purpose")
        order = request.args.get("order", "desc")
        if order not in ("asc", "desc"):
            raise ApiError(400, 'order must be "asc" or "desc"', code="invalid_order", param="order")
        limit = _limit(request, default=_FILES_MAX_LIMIT, maximum=_FILES_MAX_LIMIT)
        return _json(self.engine.list_files(purpose=purpose, order=order, after=request.args.get("after"), limit=limit))

    def _retrieve_file(self, request: Request, file_id: str) -> Response:
        return _json(self.engine.get_file(file_id))

    def _delete_file(self, request: Request, file_id: str) -> Response:
        return _json(self.engine.delete_file(file_id))

    def _file_content(self, request: Request, file_id: str) -> Response:
        record, handle = self.engine.open_file_content(file_id)
        size = handle.seek(0, 2)
        handle.seek(0)
        response = Response(
            wrap_file(request.environ, handle),
            status=200,
            content_type="application/jsonl",
            direct_passthrough=True,
        )
        response.headers["Content-Length"] = str(size)
        response.headers["Content-Disposition"] = _attachment(record.filename)
        return response

    def _create_batch(self, request: Request) -> Response:
        raw = _read_small_body(request)
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = None
        return _json(self.engine.create_batch(payload))

    def _list_batches(self, request: Request) -> Response:
        limit = _limit(request, default=_BATCHES_DEFAULT_LIMIT, maximum=_BATCHES_MAX_LIMIT)
        return _json(self.engine.list_batches(after=request.args.get("after"), limit=limit))

    def _retrieve_batch(self, request: Request, batch_id: str) -> Response:
        return _json(self.engine.get_batch(batch_id))

    def _cancel_batch(self, request: Request, batch_id: str) -> Response:
        return _json(self.engine.cancel_batch(batch_id))

    # ---- /_emulator --------------------------------------------------------------------------

    def _admin(self, request: Request) -> Response:
        route = (request.method, request.path.rstrip("/"))
        if route == ("POST", "/_emulator/faults"):
            return _json({"added": self._add_fault(_json_body(request))})
        if route == ("DELETE", "/_emulator/faults"):
            self.faults.clear()
            return _json({"cleared": True})
        if route == ("GET", "/_emulator/faults"):
            return _json(self.faults.describe())
        if route == ("GET", "/_emulator/health"):
            report = self.health()
            return _json(report, status=200 if report.get("status") == "ok" else 503)
        if route == ("GET", "/_emulator/calls"):
            calls = [
                {
                    "method": c.method,
                    "path": c.path,
                    "status": c.status,
                    "request_id": c.request_id,
                    "at": c.at,
                }
                for c in self.calls.all()
            ]
            return _json({"object": "list", "data": calls})
        if route == ("POST", "/_emulator/advance"):
            body = _json_body(request)
            if self._advance is None:
                raise ApiError(
                    400,
                    "advance needs the emulator to run on a ManualClock or a SkewableClock (batchdrop local)",
                    code="not_manual_clock",
                )
            seconds = body.get("seconds")
            if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
                raise ApiError(400, "seconds must be a non-negative number", param="seconds")
            return _json({"now": self._advance(float(seconds))})
        if route == ("POST", "/_emulator/process"):
            self.engine.process()
            return _json({"now": self.engine.clock.now()})
        raise errors.not_found_route(request.method, request.path)

    def _add_fault(self, spec: dict[str, Any]) -> dict[str, Any]:
        try:
            if spec.get("kind") == "line_errors":
                rule = self.faults.line_errors(
                    str(spec["code"]),
                    rate=float(spec.get("rate", 0.0)),
                    seed=int(spec.get("seed", 0)),
                    custom_ids=[str(c) for c in spec.get("custom_ids", [])],
                    times_per_line=None if spec.get("times_per_line") is None else int(spec["times_per_line"]),
                )
                return {
                    "kind": "line_errors",
                    "code": rule.code,
                    "rate": rule.rate,
                    "seed": rule.seed,
                    "times_per_line": rule.times_per_line,
                }
            if spec.get("kind") == "stall_batches":
                times = spec.get("times", 1)
                stall = self.faults.stall_batches(
                    after_lines=int(spec.get("after_lines", 0)), times=None if times is None else int(times)
                )
                return {"kind": "stall_batches", "after_lines": stall.after_lines, "times": stall.times}
            return vars(self.faults.add(Fault.from_json(spec))).copy()
        except (KeyError, TypeError, ValueError) as error:
            raise ApiError(400, f"Invalid fault: {error}") from None


def _limit(request: Request, *, default: int, maximum: int) -> int:
    raw = request.args.get("limit")
    if raw is None:
        return default
    try:
        limit = int(raw)
    except ValueError:
        raise errors.invalid_limit() from None
    if not 1 <= limit <= maximum:
        raise errors.invalid_limit()
    return limit


def _read_small_body(request: Request) -> bytes:
    """A JSON request body, never more than _MAX_JSON_BODY bytes read (also when sent chunked)."""
    if request.content_length is not None and request.content_length > _MAX_JSON_BODY:
        raise ApiError(413, "Request body too large", code="request_too_large")
    body = request.stream.read(_MAX_JSON_BODY + 1)
    if len(body) > _MAX_JSON_BODY:
        raise ApiError(413, "Request body too large", code="request_too_large")
    return body


def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(_read_small_body(request) or b"{}")
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ApiError(400, "Request body must be a JSON object")
    return body


def _json(document: Any, status: int = 200) -> Response:
    return Response(json.dumps(document), status=status, content_type="application/json")


def _error_response(error: ApiError) -> Response:
    response = _json(error.body(), status=error.status)
    for name, value in error.headers.items():
        response.headers[name] = value
    return response


def _fault_response(fault: Fault) -> Response:
    error = errors.fault_error(fault.status, fault.error_type, fault.message)
    if fault.retry_after is not None:
        error.headers["Retry-After"] = fault.retry_after
    return _error_response(error)


def _fault_name(plan: FaultPlan) -> str | None:
    if plan.http is not None:
        return f"http_{plan.http.status}"
    if plan.reply_lost:
        return "reply_lost"
    return "slow" if plan.delay else None


def _preflight() -> Response:
    response = Response(status=204)
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE, OPTIONS"
    response.headers["Access-Control-Allow-Headers"] = "x-api-key, x-project-id, content-type"
    return response


def _attachment(filename: str) -> str:
    quoted = filename.replace("\\", "\\\\").replace('"', '\\"')
    if quoted.isascii():
        return f'attachment; filename="{quoted}"'
    fallback = quoted.encode("ascii", "replace").decode().replace("?", "_")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename)}"


def _wait(delay: float) -> bool:
    """Sleep for a slow fault. In-process, never longer than the client would wait: returns True when the
    client's read timeout ran out first (the reply is then lost)."""
    if delay <= 0:
        return False
    call = current_call()
    if call is not None and call.read_timeout is not None and call.read_timeout < delay:
        time.sleep(call.read_timeout)
        return True
    time.sleep(delay)
    return False


def _drop_connection(environ: dict[str, Any], delay: float) -> None:
    """Server mode "reply lost": stall, then shut the socket so no valid reply is ever sent."""
    time.sleep(delay)
    connection = environ.get("werkzeug.socket")
    if isinstance(connection, socket.socket):
        with contextlib.suppress(OSError):
            connection.shutdown(socket.SHUT_RDWR)
