"""Job identity and the names results are filed under."""

from __future__ import annotations

import pytest

from batchdrop.models import ObjectRef, classify_key
from batchdrop.validation import ProblemCode


def test_the_job_id_is_the_object_identity() -> None:
    first = ObjectRef("b", "inbox/x.jsonl", version_id="v1", etag="e1")
    assert first.job_id == ObjectRef("b", "inbox/x.jsonl", version_id="v1", etag="other").job_id
    assert first.job_id != ObjectRef("b", "inbox/x.jsonl", version_id="v2", etag="e1").job_id
    assert first.job_id != ObjectRef("b2", "inbox/x.jsonl", version_id="v1").job_id


def test_without_versioning_the_etag_tells_uploads_apart() -> None:
    quoted = ObjectRef("b", "inbox/x.jsonl", etag='"abc"')
    assert quoted.job_id == ObjectRef("b", "inbox/x.jsonl", etag="abc").job_id
    assert quoted.job_id != ObjectRef("b", "inbox/x.jsonl", etag="abd").job_id


def classify(key: str, *, any_key: bool = False):  # type: ignore[no-untyped-def]
    return classify_key(
        key, input_prefix="inbox/", output_prefix="outbox/", reserved_prefixes=("outbox/", "work/"), any_key=any_key
    )


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("inbox/x.jsonl", "x"),
        ("inbox/team a/q+1 ü.jsonl", "team a/q+1 ü"),
        ("inbox/x.jsonl.gz", "x"),
    ],
)
def test_input_names(key: str, name: str) -> None:
    classified = classify(key)
    assert classified is not None and classified.problem is None
    assert classified.name == name
    assert classified.output_prefix("outbox/", "job-1") == f"outbox/{name}/"


@pytest.mark.parametrize("key", ["outbox/x.jsonl", "x.jsonl", "inbox/", "inbox/folder/"])
def test_keys_that_are_not_inputs(key: str) -> None:
    assert classify(key) is None


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("inbox/x.json", "x.json"),
        ("inbox/x.jsonl.bak", "x.jsonl.bak"),
        ("inbox/.jsonl", ".jsonl"),
        ("inbox/a/b.csv", "a/b.csv"),
    ],
)
def test_files_under_the_input_prefix_that_are_not_json_lines_are_rejected_by_their_own_name(
    key: str, name: str
) -> None:
    classified = classify(key)
    assert classified is not None and classified.problem is not None
    assert classified.problem.code.value == "not_jsonl" and classified.name == name


@pytest.mark.parametrize(("key", "name"), [("inbox/X.JSONL", "X"), ("inbox/y.Jsonl.GZ", "y")])
def test_the_extension_is_read_in_any_case(key: str, name: str) -> None:
    classified = classify(key)
    assert classified is not None and classified.problem is None and classified.name == name


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        ("inbox/a/../b.jsonl", "'..'"),
        ("inbox//b.jsonl", "empty"),
        ("inbox/a/./b.jsonl", "'.'"),
        ("inbox/bad\x07name.jsonl", "control character"),
        ("inbox/line\nbreak.jsonl", "control character"),
        ("inbox/tab\there.jsonl", "control character"),
    ],
)
def test_keys_that_cannot_name_a_folder_are_rejected_with_a_report_of_their_own(key: str, fragment: str) -> None:
    # Given a key under the input prefix that cannot name a results folder safely
    classified = classify(key)
    # Then it is rejected (not dropped), its report filed under the job id
    assert classified is not None and classified.name is None
    assert classified.problem is not None and classified.problem.code == ProblemCode.INVALID_KEY
    assert fragment in classified.problem.message
    assert classified.output_prefix("outbox/", "job-1") == "outbox/_rejected-keys/job-1/"


def test_the_rejection_suggests_a_clean_key() -> None:
    classified = classify("inbox//team/./x.jsonl")
    assert classified is not None and classified.problem is not None
    assert "inbox/team/x.jsonl" in classified.problem.message


def test_a_key_whose_results_would_pass_s3s_key_limit_is_rejected() -> None:
    longest = "a" * (1024 - len("outbox/") - 1 - len("errors.jsonl"))
    assert classify(f"inbox/{longest}.jsonl").name == longest  # type: ignore[union-attr]
    too_long = classify(f"inbox/{longest}b.jsonl")
    assert too_long is not None and too_long.problem is not None
    assert too_long.problem.code == ProblemCode.KEY_TOO_LONG
    # multi-byte characters count as bytes, as S3 counts them
    assert classify(f"inbox/{'ü' * 600}.jsonl").problem is not None  # type: ignore[union-attr]


def test_submitted_keys_outside_the_inbox_are_named_by_their_path_but_never_the_pipelines_own() -> None:
    assert classify("exports/2026/x.jsonl", any_key=True).name == "exports/2026/x"  # type: ignore[union-attr]
    assert classify("inbox/x.jsonl", any_key=True).name == "x"  # type: ignore[union-attr]
    assert classify("outbox/x/output.jsonl", any_key=True) is None
    assert classify("work/j/shards/0.jsonl", any_key=True) is None


def test_the_merged_layout_of_the_largest_job_fits_one_dynamodb_item() -> None:
    # Given a job of MaxBatchesPerInput (4,999) shards whose failed lines went again in two rounds, each
    # shard's result files merged (its output and its last kept errors)
    import gzip
    import random

    from batchdrop.flow.merged_results import LAYOUT_MAX_BYTES
    from batchdrop.models import MergedFile, MergedLayout

    results = "work/job-0123456789abcdef0123456789abcdef/results/"
    shards = range(4_999 * 3)
    outputs = [f"{results}{index:05d}.output.jsonl" for index in shards]
    errors = [f"{results}{index:05d}.kept-02.jsonl" for index in shards]
    sizes = [random.Random(index).randrange(10**9) for index in shards]  # result files up to a GB

    # When its layout is stored as the store stores it
    layout = MergedLayout(
        round=2, output=MergedFile.of("e" * 32, outputs, sizes), errors=MergedFile.of("f" * 32, errors, sizes)
    )
    stored = gzip.compress(layout.model_dump_json().encode(), compresslevel=6)

    # Then it stays under the bound kept under the 400 KB a DynamoDB item may hold, and gives every
    # file's place back
    assert len(stored) < LAYOUT_MAX_BYTES
    back = MergedLayout.model_validate_json(gzip.decompress(stored))
    assert back.output.ranges()[outputs[2]] == (sizes[0] + sizes[1], sizes[2])
    assert list(back.errors.ranges()) == errors
