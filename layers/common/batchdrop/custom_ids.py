"""Sets of the custom_ids seen in an input, to find duplicates across a whole file.

`MemoryIdSet` keeps the ids themselves (a batch's 50,000 lines at most: the emulator's create).

`DigestIdSet` is what submit uses on a whole dropped file, whose size the operator bounds but the ids'
lengths do not: its memory is a fixed 4 bytes per slot (about 5.3 bytes per id at most), whatever the
ids' lengths. Each slot packs an 8-bit tag of the id's hash with the 24-bit ordinal of the id; the hash's
other bits place it in the table. The ids themselves are appended to a file on local disk (ids over 64
bytes as their SHA-256, so the file stays small too). When a new id's tag matches a slot, the earlier id
is read back from disk and compared, so a tag collision never makes a false duplicate: the answer is
exact (for ids over 64 bytes, up to a SHA-256 collision). When the table grows, the slots are placed
again from the id file, read once in order (the slots keep too little of each hash to do without).
"""

from __future__ import annotations

import hashlib
import os
from array import array
from collections.abc import Callable, Iterator
from typing import Protocol

_TAG_BITS = 8
_ORDINAL_BITS = 24
MAX_IDS = (1 << _ORDINAL_BITS) - 1
"""The most ids one DigestIdSet holds (about 16.7 million): the input line limit stays below it."""
_TAG_MASK = (1 << _TAG_BITS) - 1
_ORDINAL_MASK = (1 << _ORDINAL_BITS) - 1
_INITIAL_SLOTS = 1 << 14
_MAX_LOAD = 0.75
_SPARSE_EVERY = 16  # the disk offset of every 16th id is kept: reading one back skips at most 15 records
_INLINE_BYTES = 64
_REPLAY_CHUNK = 1024 * 1024


class CustomIdSet(Protocol):
    def add(self, custom_id: str) -> bool:
        """Adds the id; False if it was there already (a duplicate)."""
        ...

    def close(self) -> None: ...


class MemoryIdSet:
    def __init__(self) -> None:
        self._ids: set[str] = set()

    def add(self, custom_id: str) -> bool:
        if custom_id in self._ids:
            return False
        self._ids.add(custom_id)
        return True

    def close(self) -> None:
        self._ids.clear()


class TooManyIds(Exception):
    """More ids than one DigestIdSet can number."""


class DigestIdSet:
    """A set of ids with fixed-size memory per id and an exact answer (see the module's docstring)."""

    def __init__(self, directory: str, *, hasher: Callable[[bytes], int] = hash) -> None:
        self._hash = hasher
        self._path = os.path.join(directory, "custom-ids.bin")
        self._file = open(self._path, "w+b")  # noqa: SIM115 - closed by close()
        self._written = 0  # bytes appended so far (the next record's offset)
        self._count = 0
        self._sparse = array("Q")
        self._slots = array("I", bytes(4 * _INITIAL_SLOTS))
        self._limit = int(_INITIAL_SLOTS * _MAX_LOAD)
        self._unflushed = False

    def __len__(self) -> int:
        return self._count

    @property
    def memory_bytes(self) -> int:
        return self._slots.itemsize * len(self._slots) + self._sparse.itemsize * len(self._sparse)

    def add(self, custom_id: str) -> bool:
        key = _stored_form(custom_id)
        digest = self._hash(key) & 0xFFFF_FFFF_FFFF_FFFF
        tag = _tag_of(digest)
        slots = self._slots
        size = len(slots)
        index = (digest >> _TAG_BITS) % size
        while slot := slots[index]:
            if slot >> _ORDINAL_BITS == tag and self._read(slot & _ORDINAL_MASK) == key:
                return False
            index = (index + 1) % size
        if self._count >= MAX_IDS:
            raise TooManyIds(f"more than {MAX_IDS} custom_ids")
        ordinal = self._append(key)
        slots[index] = (tag << _ORDINAL_BITS) | ordinal
        del slots  # the old table must be free before _grow() builds the new one
        if self._count > self._limit:
            self._grow()
        return True

    def close(self) -> None:
        self._file.close()
        self._slots = array("I")
        self._sparse = array("Q")
        if os.path.exists(self._path):
            os.remove(self._path)

    def _append(self, key: bytes) -> int:
        ordinal = self._count
        if ordinal % _SPARSE_EVERY == 0:
            self._sparse.append(self._written)
        self._file.write(len(key).to_bytes(4, "little"))
        self._file.write(key)
        self._written += 4 + len(key)
        self._count += 1
        self._unflushed = True
        return ordinal

    def _flush(self) -> None:
        if self._unflushed:
            self._file.flush()
            self._unflushed = False

    def _read(self, ordinal: int) -> bytes:
        self._flush()
        descriptor = self._file.fileno()
        offset = self._sparse[ordinal // _SPARSE_EVERY]
        for _ in range(ordinal % _SPARSE_EVERY):
            offset += 4 + int.from_bytes(os.pread(descriptor, 4, offset), "little")
        length = int.from_bytes(os.pread(descriptor, 4, offset), "little")
        return os.pread(descriptor, length, offset + 4)

    def _stored(self) -> Iterator[bytes]:
        """Every id kept so far, in order, read from disk in large pieces."""
        self._flush()
        descriptor = self._file.fileno()
        offset, buffer, start = 0, b"", 0
        while offset < self._written or start < len(buffer):
            if len(buffer) - start < 4 + _INLINE_BYTES + 1 and offset < self._written:
                piece = os.pread(descriptor, _REPLAY_CHUNK, offset)
                offset += len(piece)
                buffer, start = buffer[start:] + piece, 0
            length = int.from_bytes(buffer[start : start + 4], "little")
            yield buffer[start + 4 : start + 4 + length]
            start += 4 + length

    def _grow(self) -> None:
        size = len(self._slots) * 2
        self._slots = array("I")  # the old table goes first: the new one is placed from disk
        slots = array("I", bytes(4 * size))
        for ordinal, key in enumerate(self._stored()):
            digest = self._hash(key) & 0xFFFF_FFFF_FFFF_FFFF
            index = (digest >> _TAG_BITS) % size
            while slots[index]:
                index = (index + 1) % size
            slots[index] = (_tag_of(digest) << _ORDINAL_BITS) | ordinal
        self._slots = slots
        self._limit = int(size * _MAX_LOAD)


def _tag_of(digest: int) -> int:
    return (digest & _TAG_MASK) or 1  # never 0: a zero slot is an empty one


def _stored_form(custom_id: str) -> bytes:
    """The id as kept on disk and compared: itself when short, else its SHA-256; a marker byte in front
    keeps the two forms apart."""
    encoded = custom_id.encode("utf-8")
    if len(encoded) <= _INLINE_BYTES:
        return b"\x01" + encoded
    return b"\x00" + hashlib.sha256(encoded).digest()
