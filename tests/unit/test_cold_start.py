"""Cold start (issue 8): the X-Ray SDK, about half of a handler's import, is loaded only where tracing is enabled,
and the utilities some paths never need are imported where they are used. Structural checks, not timings: the
figures are bench/bench_cold_start.py's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from aws_lambda_powertools import Tracer
from testsupport import REPO

from batchdrop.observability import LazyTracer, tracing_enabled

HANDLERS = ("submit", "poll", "collect")
TRACING_ENV = ("POWERTOOLS_TRACE_DISABLED", "LAMBDA_TASK_ROOT", "AWS_SAM_LOCAL", "AWS_CHALICE_CLI_MODE")

# Imports the three handlers in a fresh interpreter and reports what came with them.
PROBE = """
import json, sys
sys.path[:0] = ['functions/submit', 'functions/poll', 'functions/collect']
import {modules}
from batchdrop.observability import tracer

def chain(function):
    names = []
    while function is not None:
        names.append(function.__code__.co_qualname)
        function = getattr(function, '__wrapped__', None)
    return names

handlers = {{name: sys.modules[name + '_handler'] for name in {handlers!r}}}
print(json.dumps({{
    'xray': sorted(m for m in sys.modules if m.split('.')[0] == 'aws_xray_sdk'),
    'built': tracer._tracer is not None,
    'disabled': tracer._tracer.disabled if tracer._tracer is not None else None,
    'chains': {{name: chain(module.lambda_handler) for name, module in handlers.items()}},
    'modules': sorted(sys.modules),
}}))
"""


def probe(env: dict[str, str | None], handlers: tuple[str, ...] = HANDLERS) -> dict[str, Any]:
    environ = {name: value for name, value in os.environ.items() if name not in TRACING_ENV}
    environ.update({name: value for name, value in env.items() if value is not None})
    script = PROBE.format(modules=", ".join(f"{name}_handler" for name in handlers), handlers=handlers)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=environ, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def traced_by_powertools(chain: list[str]) -> bool:
    return any(name.startswith("Tracer.capture_lambda_handler") for name in chain)


@pytest.mark.parametrize(
    "env",
    [
        pytest.param({"POWERTOOLS_TRACE_DISABLED": "true", "LAMBDA_TASK_ROOT": "/var/task"}, id="switched-off"),
        pytest.param({}, id="outside-lambda"),
        pytest.param({"LAMBDA_TASK_ROOT": "/var/task", "AWS_SAM_LOCAL": "true"}, id="sam-local"),
    ],
)
def test_untraced_handlers_never_import_the_xray_sdk(env: dict[str, str | None]) -> None:
    # Given tracing disabled, as Powertools decides it (locally, under SAM local, in the tests)
    # When the three handlers are imported
    report = probe(env)
    # Then the X-Ray SDK is not loaded, no Tracer is built, and the handlers are not wrapped for tracing
    assert report["xray"] == []
    assert report["built"] is False
    for name, chain in report["chains"].items():
        assert not traced_by_powertools(chain), (name, chain)


def test_traced_handlers_are_wrapped_by_the_powertools_tracer() -> None:
    # Given tracing enabled, as deployed (in Lambda, `Tracing: Active`, no switch)
    # When the three handlers are imported
    report = probe({"LAMBDA_TASK_ROOT": "/var/task"})
    # Then the real Tracer is built once, enabled, and each handler runs inside its capture_lambda_handler
    assert "aws_xray_sdk.core" in report["xray"]
    assert report["built"] is True
    assert report["disabled"] is False
    for name, chain in report["chains"].items():
        assert traced_by_powertools(chain), (name, chain)


def test_the_traced_wrapper_calls_through_and_returns_the_handler_reply() -> None:
    script = """
import sys
from aws_lambda_powertools import Tracer
from batchdrop.observability import tracer

def handler(event, context):
    return {'echo': event}

def helper(value):
    return value * 2

wrapped = tracer.capture_lambda_handler(capture_response=False)(handler)
method = tracer.capture_method(helper)
assert wrapped is not handler and wrapped.__wrapped__ is handler
assert method is not helper and method.__wrapped__ is helper
assert isinstance(tracer.real, Tracer) and not tracer.real.disabled
assert wrapped({'a': 1}, None) == {'echo': {'a': 1}}
assert method(21) == 42
print('ok')
"""
    environ = {name: value for name, value in os.environ.items() if name not in TRACING_ENV}
    environ.update({"LAMBDA_TASK_ROOT": "/var/task", "AWS_XRAY_CONTEXT_MISSING": "IGNORE_ERROR"})
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=environ, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stdout + result.stderr


def test_utilities_some_paths_never_need_are_not_imported_with_the_handlers() -> None:
    # Idempotency guards submit's intake only; the secret (Parameters) is read at the first API call.
    for handler, absent in (
        ("poll", ("aws_lambda_powertools.utilities.idempotency", "aws_lambda_powertools.utilities.parameters")),
        ("collect", ("aws_lambda_powertools.utilities.idempotency", "aws_lambda_powertools.utilities.parameters")),
        ("submit", ("aws_lambda_powertools.utilities.parameters",)),
    ):
        loaded = set(probe({"POWERTOOLS_TRACE_DISABLED": "true"}, (handler,))["modules"])
        assert not [name for name in absent if name in loaded], handler


@pytest.mark.parametrize(
    ("env", "enabled"),
    [
        ({"LAMBDA_TASK_ROOT": "/var/task"}, True),
        ({"LAMBDA_TASK_ROOT": "/var/task", "POWERTOOLS_TRACE_DISABLED": "false"}, True),
        ({"LAMBDA_TASK_ROOT": "/var/task", "POWERTOOLS_TRACE_DISABLED": "true"}, False),
        ({"LAMBDA_TASK_ROOT": "/var/task", "POWERTOOLS_TRACE_DISABLED": "1"}, False),
        ({"LAMBDA_TASK_ROOT": "/var/task", "AWS_SAM_LOCAL": "true"}, False),
        ({"LAMBDA_TASK_ROOT": "/var/task", "AWS_CHALICE_CLI_MODE": "true"}, False),
        ({}, False),
        ({"POWERTOOLS_TRACE_DISABLED": "false"}, False),
    ],
)
def test_tracing_is_enabled_exactly_where_powertools_would_trace(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], enabled: bool
) -> None:
    for name in TRACING_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert tracing_enabled() is enabled
    assert LazyTracer("batchdrop").enabled is enabled


def test_untraced_decorators_return_the_function_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    lazy = LazyTracer("batchdrop")

    def handler(event: dict[str, Any], context: Any) -> str:
        return "done"

    decorators: list[Callable[[Any], Any]] = [
        lazy.capture_lambda_handler,
        lazy.capture_lambda_handler(capture_response=False),
        lazy.capture_lambda_handler(),
        lazy.capture_method,
        lazy.capture_method(capture_response=False),
    ]
    for decorate in decorators:
        assert decorate(handler) is handler
    assert lazy._tracer is None
    assert not isinstance(getattr(lazy, "_tracer", None), Tracer)
