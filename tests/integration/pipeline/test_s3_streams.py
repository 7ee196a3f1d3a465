"""Reading inputs as streams from one long-lived S3 client (a warm function's): each read costs the same,
however many objects the client has opened before."""

from __future__ import annotations

import gzip
from typing import Any

import boto3
from moto import mock_aws

from batchdrop.integrations import s3io
from batchdrop.models import ObjectRef


def hooks_on(s3: Any) -> int:
    """The handlers the client runs for each request it creates."""
    return len(list(s3.meta.events._emitter._handlers.prefix_search("request-created.s3.GetObject")))


def test_opening_many_objects_adds_no_hook_to_the_client() -> None:
    with mock_aws():
        # Given one client that has opened a plain and a gzipped object already
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="inputs")
        s3.put_object(Bucket="inputs", Key="in.jsonl", Body=b'{"a": 1}\n')
        s3.put_object(Bucket="inputs", Key="in.jsonl.gz", Body=gzip.compress(b'{"a": 2}\n'))
        plain, zipped = (s3io.head(s3, "inputs", key) for key in ("in.jsonl", "in.jsonl.gz"))
        assert isinstance(plain, ObjectRef) and isinstance(zipped, ObjectRef)
        for ref in (plain, zipped):
            with s3io.open_object(s3, ref) as stream:
                stream.read()
        before = hooks_on(s3)

        # When it opens and reads a hundred more
        for _ in range(50):
            for ref, body in ((plain, b'{"a": 1}\n'), (zipped, b'{"a": 2}\n')):
                with s3io.open_object(s3, ref) as stream:
                    assert stream.read() == body

        # Then its requests run the same hooks as before
        assert hooks_on(s3) == before
