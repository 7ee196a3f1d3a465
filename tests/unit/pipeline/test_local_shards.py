"""The split's shard files on local disk: kept for the upload, copied in the background with a bound on
what waits, never removed from under a copy or a reader, and waited for at the end within a time."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from batchdrop.integrations.shard_copies import COPIES_QUEUED, LocalShards


def _file(tmp_path: Path, name: str, size: int = 10) -> str:
    path = tmp_path / name
    path.write_bytes(b"x" * size)
    return str(path)


def test_the_split_waits_once_copies_pile_up(tmp_path: Path) -> None:
    # Given copies that do not end until released
    shards = LocalShards(str(tmp_path))
    release = threading.Event()
    started: list[str] = []

    def slow_copy(key: str) -> None:
        started.append(key)
        release.wait(5)

    # When more copies are asked for than may wait
    for n in range(COPIES_QUEUED + 1):
        key = f"k{n}"
        shards.keep(key, _file(tmp_path, f"s{n}"))
        shards.copy_in_background(key, lambda key=key: slow_copy(key))  # type: ignore[misc]
    blocked = threading.Thread(target=lambda: shards.copy_in_background("late", lambda: None))
    blocked.start()
    time.sleep(0.3)

    # Then the next one waits until the oldest is done
    assert blocked.is_alive()
    release.set()
    blocked.join(5)
    assert not blocked.is_alive()
    assert shards.finish_copies() == 0
    shards.close()


def test_a_file_dropped_during_its_copy_or_its_upload_goes_only_after_both(tmp_path: Path) -> None:
    shards = LocalShards(str(tmp_path))
    path = shards.keep("k", _file(tmp_path, "s"))
    copying = threading.Event()
    release = threading.Event()

    def copy() -> None:
        copying.set()
        release.wait(5)
        shards.drop("k")  # no room to keep it: the copy drops it when done

    shards.copy_in_background("k", copy)
    copying.wait(5)
    reading = shards.path("k", 10)  # an upload starts reading it
    assert reading == path
    release.set()
    shards.finish_copies()
    assert os.path.exists(path)  # the reader still has it
    shards.drop("k", reader=True)
    assert not os.path.exists(path)
    assert shards.path("k", 10) is None
    shards.close()


def test_closing_waits_for_copies_only_as_long_as_it_is_given(tmp_path: Path) -> None:
    shards = LocalShards(str(tmp_path))
    shards.keep("k", _file(tmp_path, "s"))
    release = threading.Event()
    shards.copy_in_background("k", lambda: release.wait(10) and None)
    started = time.monotonic()
    shards.close(timeout=0.2)
    assert time.monotonic() - started < 2
    release.set()
    assert not [name for name in os.listdir(tmp_path) if name.startswith("shards-")]


def test_kept_files_never_share_a_name(tmp_path: Path) -> None:
    shards = LocalShards(str(tmp_path))
    first = shards.keep("a", _file(tmp_path, "shard-00000.jsonl"))
    shards.drop("a")
    second = shards.keep("b", _file(tmp_path, "shard-00000.jsonl", 20))
    assert first != second and os.path.getsize(second) == 20
    shards.close()
