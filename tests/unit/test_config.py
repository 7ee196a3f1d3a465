"""One validated settings object; a bad environment fails fast with every problem named."""

from __future__ import annotations

import pytest

from batchdrop.config import ConfigurationError, Settings

BASE = {"TABLE_NAME": "t", "SECRET_ID": "arn:aws:secretsmanager:us-east-1:1:secret:s"}


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
        ({"MAX_BATCHES_IN_FLIGHT": "zero"}, "MAX_BATCHES_IN_FLIGHT"),
    ],
)
def test_invalid_values_are_named(overrides: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        Settings.from_environ(BASE | overrides)


def test_a_missing_secret_id_is_named() -> None:
    with pytest.raises(ConfigurationError, match="SECRET_ID"):
        Settings.from_environ({"TABLE_NAME": "t"})
