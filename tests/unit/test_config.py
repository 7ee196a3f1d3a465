"""One validated settings object; a bad environment fails fast with every problem named."""

from __future__ import annotations

import pytest

from batchdrop.settings import SETTINGS_OF, ConfigurationError, Settings

BASE = {
    "TABLE_NAME": "t",
    "SECRET_ID": "arn:aws:secretsmanager:us-east-1:1:secret:s",
    "INPUT_PREFIX": "inbox/",
    "OUTPUT_PREFIX": "outbox/",
    "WORK_PREFIX": "work/",
}
EVERYTHING = BASE | {
    "BUCKET_NAME": "b",
    "TOPIC_ARN": "arn:aws:sns:us-east-1:1:t",
    "COLLECT_QUEUE_URL": "https://sqs/collect",
    "INGEST_QUEUE_URL": "https://sqs/ingest",
}


def test_defaults_follow_the_api_limits() -> None:
    settings = Settings.from_environ(BASE)
    assert settings.max_lines_per_batch == 50_000
    assert settings.max_bytes_per_batch < 104_857_600
    assert settings.api_base_url == "prod"


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"TABLE_NAME": ""}, "TABLE_NAME"),
        ({"MAX_LINES_PER_BATCH": "50001"}, "MAX_LINES_PER_BATCH"),
        ({"MAX_BYTES_PER_BATCH": "200000000"}, "MAX_BYTES_PER_BATCH"),
        ({"INPUT_PREFIX": "inbox"}, "INPUT_PREFIX"),
        ({"INPUT_PREFIX": ""}, "INPUT_PREFIX"),
        ({"MAX_BATCHES_IN_FLIGHT": "zero"}, "MAX_BATCHES_IN_FLIGHT"),
        ({"MAX_INPUT_LINES": "20000000"}, "MAX_INPUT_LINES"),
        ({"BATCH_DEADLINE_HOURS": "12"}, "BATCH_DEADLINE_HOURS"),
    ],
)
def test_invalid_values_are_named(overrides: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        Settings.from_environ(BASE | overrides)


@pytest.mark.parametrize("missing", ["SECRET_ID", "INPUT_PREFIX", "OUTPUT_PREFIX", "WORK_PREFIX"])
def test_what_decides_where_work_goes_has_no_default(missing: str) -> None:
    with pytest.raises(ConfigurationError, match=missing):
        Settings.from_environ({key: value for key, value in BASE.items() if key != missing})


@pytest.mark.parametrize(
    ("prefixes", "inner", "outer"),
    [
        ({"WORK_PREFIX": "inbox/work/"}, "WORK_PREFIX", "INPUT_PREFIX"),
        ({"OUTPUT_PREFIX": "inbox/out/"}, "OUTPUT_PREFIX", "INPUT_PREFIX"),
        ({"INPUT_PREFIX": "outbox/in/"}, "INPUT_PREFIX", "OUTPUT_PREFIX"),
        ({"OUTPUT_PREFIX": "work/"}, "OUTPUT_PREFIX", "WORK_PREFIX"),
        ({"WORK_PREFIX": "outbox/w/"}, "WORK_PREFIX", "OUTPUT_PREFIX"),
    ],
)
def test_a_prefix_under_another_is_refused(prefixes: dict[str, str], inner: str, outer: str) -> None:
    # Given prefixes where one lies under another (the pipeline's writes would come back as inputs)
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_environ(BASE | prefixes)
    # Then the message names both, and why
    assert f"{inner} " in str(refused.value) and f"under {outer}" in str(refused.value)
    assert "read as inputs" in str(refused.value)


def test_prefixes_side_by_side_are_fine() -> None:
    settings = Settings.from_environ(BASE | {"INPUT_PREFIX": "data/in/", "OUTPUT_PREFIX": "data/out/"})
    assert settings.reserved_prefixes == ("data/out/", "work/")


@pytest.mark.parametrize(
    ("function", "needed"),
    [
        ("submit", "BUCKET_NAME"),
        ("submit", "TOPIC_ARN"),
        ("poll", "COLLECT_QUEUE_URL"),
        ("poll", "INGEST_QUEUE_URL"),
        ("collect", "TOPIC_ARN"),
    ],
)
def test_each_function_fails_closed_without_what_it_uses(function: str, needed: str) -> None:
    # Given a complete environment but for one setting the function uses (missing, or empty)
    for environment in (
        {key: value for key, value in EVERYTHING.items() if key != needed},
        EVERYTHING | {needed: ""},
    ):
        # Then the function refuses to start, naming it
        with pytest.raises(ConfigurationError, match=needed):
            SETTINGS_OF[function].from_environ(environment, function=function)  # type: ignore[index]
    assert SETTINGS_OF[function].from_environ(EVERYTHING)  # type: ignore[index]
    # and the steps' own view, the base settings, leaves it to the function
    assert Settings.from_environ({key: value for key, value in EVERYTHING.items() if key != needed})
