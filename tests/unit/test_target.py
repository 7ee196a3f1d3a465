"""Which stack a command talks to: a running `batchdrop local` is found on its own when nothing else is
named, `--local` always means it, and anything named (a stack, a table, an endpoint) wins."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from batchdrop_tools import target


def parsed(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    target.add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.fixture(autouse=True)
def runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.delenv("TABLE_NAME", raising=False)
    monkeypatch.delenv("BUCKET_NAME", raising=False)
    return tmp_path


def test_a_running_local_stack_is_found_when_nothing_is_named() -> None:
    target.announce_local({"endpoint_url": "http://127.0.0.1:4599", "table": "t-local", "bucket": "b-local"})
    found = target.resolve(parsed())
    assert found.local and found.endpoint_url == "http://127.0.0.1:4599"
    assert (found.table, found.bucket) == ("t-local", "b-local")
    # and a named table wins over it
    named = target.resolve(parsed("--table", "acme-jobs", "--region", "eu-west-1"))
    assert not named.local and named.table == "acme-jobs" and named.session.region_name == "eu-west-1"
    # and when the stack stops its note goes
    target.withdraw_local()
    assert target.running_local() is None


def test_a_note_of_a_stack_that_died_is_not_taken() -> None:
    target.local_file().write_text('{"pid": 999999999, "table": "stale"}')
    assert target.running_local() is None
    with pytest.raises(target.TargetError, match="--stack-name"):
        target.resolve(parsed()).need_table()


def test_local_without_a_running_stack_means_its_default_names() -> None:
    found = target.resolve(parsed("--local"))
    assert found.local and found.endpoint_url == target.LOCAL_ENDPOINT
    assert (found.table, found.bucket) == (target.LOCAL_TABLE, target.LOCAL_BUCKET)


def test_exported_table_and_bucket_do_not_hide_a_running_local_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given $TABLE_NAME and $BUCKET_NAME exported for a deployed stack, and a local stack running
    monkeypatch.setenv("TABLE_NAME", "acme-jobs")
    monkeypatch.setenv("BUCKET_NAME", "acme-data")
    target.announce_local({"endpoint_url": "http://127.0.0.1:4599", "table": "t-local", "bucket": "b-local"})
    # Then a command naming nothing talks to the local stack
    found = target.resolve(parsed())
    assert found.local and (found.table, found.bucket) == ("t-local", "b-local")
    # and once it has stopped, to the exported names
    target.withdraw_local()
    found = target.resolve(parsed("--region", "eu-west-1"))
    assert not found.local and (found.table, found.bucket) == ("acme-jobs", "acme-data")
