"""Cold start: each handler's import time beside `import boto3`, each measured in a fresh interpreter.

    .venv/bin/python bench/bench_cold_start.py [--runs 7] [--no-traced] [--no-bytecode] [--no-setup]

Every figure is the best of `--runs` fresh interpreters, all the measurements taking turns so that a slow
moment of the machine falls on all of them alike. Columns:

- `untraced`: tracing disabled (POWERTOOLS_TRACE_DISABLED=true, as locally and in the tests); the goal of
  issue 8 is this import at most 1.5x `import boto3`.
- `traced`: as deployed (LAMBDA_TASK_ROOT set, tracing on): the X-Ray SDK is loaded as well.
- `pyc`: untraced, with batchdrop's modules already compiled (a bytecode cache in a temporary directory). The
  other columns compile them at every import, as Lambda does with the layer (it ships no __pycache__, and
  /opt is read-only) and as this machine does (PYTHONDONTWRITEBYTECODE=1, no __pycache__ in the tree);
  boto3 and the other site-packages come compiled in all columns.
- `setup`: the first invocation's fixed cost before any record is handled: the settings, the boto3
  clients (created on first use, then cached per process) and, for submit, the idempotency wrapper.
  Nothing is sent anywhere: creating a client makes no request.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HANDLERS = ("submit", "poll", "collect")
GOAL = 1.5

# Each script prints its wall time and its CPU time (this process only: what a busy machine inflates less).
IMPORT = (
    "import sys, time; sys.path.insert(0, {path!r}); started, cpu = time.perf_counter(), time.process_time(); "
    "import {module}; print(time.perf_counter() - started, time.process_time() - cpu)"
)
SETUP = (
    "import sys, time; sys.path.insert(0, {path!r}); import {module}; "
    "from batchdrop.runtime import build_services, once_per_object; from batchdrop.settings import load_settings; "
    "started, cpu = time.perf_counter(), time.process_time(); settings = load_settings({function!r}); "
    "services = build_services(settings, None); "
    "once_per_object(lambda job: None, settings, None) if {function!r} == 'submit' else None; "
    "print(time.perf_counter() - started, time.process_time() - cpu); services.close()"
)


def environment(*, traced: bool, pycache: str | None = None) -> dict[str, str]:
    """The local stack's function settings (env.json), offline credentials, and tracing on or off."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("POWERTOOLS_", "AWS_LAMBDA_"))}
    for name in ("LAMBDA_TASK_ROOT", "AWS_SAM_LOCAL", "AWS_CHALICE_CLI_MODE", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
        env.pop(name, None)
    with open(os.path.join(REPO, "env.json"), encoding="utf-8") as handle:
        local = json.load(handle)
    env.update(local["Parameters"])
    env.update(local.get("PollFunction", {}))
    env.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "POWERTOOLS_METRICS_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
        }
    )
    if traced:
        env["LAMBDA_TASK_ROOT"] = os.path.join(REPO, "functions")
    else:
        env["POWERTOOLS_TRACE_DISABLED"] = "true"
    if pycache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = pycache
    return env


def seconds(script: str, env: dict[str, str], clock: str = "wall") -> float:
    reply = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True)
    if reply.returncode != 0:
        raise SystemExit(f"failed: {script}\n{reply.stderr}")
    wall, cpu = reply.stdout.strip().splitlines()[-1].split()
    return float(cpu if clock == "cpu" else wall)


def best_of(
    jobs: dict[tuple[str, str], tuple[str, dict[str, str]]], runs: int, clock: str = "wall"
) -> dict[tuple[str, str], float]:
    """The best of `runs` fresh interpreters for each (column, target) job, all of them taking turns."""
    best = dict.fromkeys(jobs, float("inf"))
    for _ in range(runs):
        for job, (script, env) in jobs.items():
            best[job] = min(best[job], seconds(script, env, clock))
    return best


def import_script(function: str) -> str:
    return IMPORT.format(path=os.path.join("functions", function), module=f"{function}_handler")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="fresh interpreters per figure (default 7)")
    parser.add_argument("--no-traced", action="store_true", help="skip the traced imports")
    parser.add_argument("--no-bytecode", action="store_true", help="skip the imports with batchdrop compiled")
    parser.add_argument("--no-setup", action="store_true", help="skip the first invocation's fixed cost")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall time (default), or the process's CPU time: steadier while other work shares the machine",
    )
    args = parser.parse_args()

    untraced_env = environment(traced=False)
    with tempfile.TemporaryDirectory(prefix="batchdrop-pyc-") as pycache:
        envs = {"untraced": untraced_env}
        if not args.no_traced:
            envs["traced"] = environment(traced=True)
        if not args.no_bytecode:
            envs["pyc"] = environment(traced=False, pycache=pycache)
        jobs = {("untraced", "boto3"): (IMPORT.format(path=".", module="boto3"), untraced_env)}
        for column, env in envs.items():
            jobs.update({(column, function): (import_script(function), env) for function in HANDLERS})
        if not args.no_setup:
            for function in HANDLERS:
                script = SETUP.format(
                    path=os.path.join("functions", function), module=f"{function}_handler", function=function
                )
                jobs[("setup", function)] = (script, untraced_env)
        if not args.no_bytecode:
            best_of({job: jobs[job] for job in jobs if job[0] == "pyc"}, 1)  # fills the bytecode cache
        best = best_of(jobs, args.runs, args.clock)
    boto3_seconds = best[("untraced", "boto3")]
    columns = [(column, column != "setup") for column in [*envs, *(["setup"] if not args.no_setup else [])]]

    print(
        f"best of {args.runs} fresh interpreters, {sys.executable} (Python {sys.version.split()[0]}), "
        f"{args.clock} seconds"
    )
    header = f"{'import':<18}"
    for name, ratio in columns:
        header += f"{name:>10}" + (f"{'x boto3':>9}" if ratio else "")
    print(header)
    print(f"{'boto3':<18}{boto3_seconds:>10.3f}{1.0:>9.2f}")
    for function in HANDLERS:
        line = f"{function + '_handler':<18}"
        for column, ratio in columns:
            figure = best[(column, function)]
            line += f"{figure:>10.3f}" + (f"{figure / boto3_seconds:>9.2f}" if ratio else "")
        print(line)
    over = [function for function in HANDLERS if best[("untraced", function)] / boto3_seconds > GOAL]
    print(
        f"untraced import over {GOAL}x boto3: {', '.join(over)}"
        if over
        else f"every handler's untraced import within {GOAL}x boto3"
    )


if __name__ == "__main__":
    main()
