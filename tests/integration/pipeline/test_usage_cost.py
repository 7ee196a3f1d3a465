"""What a job cost: report.json's and Batch Job Finished's `usage` are the sums over output.jsonl's own
lines (each answered line once, whichever round answered it), and `cost` prices them from the table, with
null, never a guess, for a model the table does not know."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pipeline_harness import Pipeline, chat_line, jsonl

from batchdrop.settings import ConfigurationError, Settings

KNOWN = "llama-3.1-8b-instruct-fast"  # list price 0.02 in, 0.05 out per million tokens
UNKNOWN = "zgpu-small"


def lines(n: int, model: str, prefix: str) -> list[dict[str, Any]]:
    return [
        chat_line(f"{prefix}-{i}", f"question {i}: " + "words " * (i % 7)) | {"body": body(model, i)} for i in range(n)
    ]


def body(model: str, i: int) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": f"question {i}: " + "words " * (i % 7)}]}


def summed_from_output(pipeline: Pipeline, name: str) -> dict[str, dict[str, int]]:
    """The usage of output.jsonl's lines, summed here, by model (the test's own reading)."""
    sums: dict[str, dict[str, int]] = {}
    for line in pipeline.lines(f"outbox/{name}/output.jsonl"):
        reply = line["response"]["body"]
        tokens = sums.setdefault(reply["model"], {"lines": 0, "prompt_tokens": 0, "completion_tokens": 0})
        tokens["lines"] += 1
        tokens["prompt_tokens"] += reply["usage"]["prompt_tokens"]
        tokens["completion_tokens"] += reply["usage"]["completion_tokens"]
    return sums


def test_usage_is_the_sum_over_the_output_and_cost_prices_it(pipeline: Pipeline) -> None:
    # Given a file of 40 lines for a model of the price table
    pipeline.drop("inbox/priced.jsonl", jsonl(lines(40, KNOWN, "p")))

    # When it runs to the end
    pipeline.run()

    # Then report.json's usage is what output.jsonl's lines say, and its cost is those tokens at list price
    report = pipeline.report("priced")
    expected = summed_from_output(pipeline, "priced")[KNOWN]
    usage = report["usage"]
    assert expected["lines"] == 40 and expected["prompt_tokens"] > 40 * 3
    for field in ("lines", "prompt_tokens", "completion_tokens"):
        assert usage["total"][field] == usage["by_model"][KNOWN][field] == expected[field]
    assert usage["total"]["total_tokens"] == expected["prompt_tokens"] + expected["completion_tokens"]
    assert usage["wasted"]["lines"] == 0
    price = (expected["prompt_tokens"] * 0.02 + expected["completion_tokens"] * 0.05) / 1_000_000
    cost = report["cost"]
    assert cost["currency"] == "USD" and cost["unpriced_models"] == []
    assert cost["by_model"][KNOWN] == pytest.approx(price) and cost["total"] == pytest.approx(price)
    assert cost["prices_as_of"].startswith("2026-08")

    # And Batch Job Finished carries the same figures
    (finished,) = pipeline.finished_events
    assert finished["detail"]["usage"] == usage and finished["detail"]["cost"] == cost


def test_a_model_the_table_does_not_know_has_its_tokens_and_a_null_cost(pipeline: Pipeline) -> None:
    # Given one file with lines for a priced model and for one no table knows
    pipeline.drop("inbox/mixed.jsonl", jsonl(lines(6, KNOWN, "k") + lines(4, UNKNOWN, "u")))
    pipeline.run()

    report = pipeline.report("mixed")
    sums = summed_from_output(pipeline, "mixed")
    assert {model: tokens["lines"] for model, tokens in report["usage"]["by_model"].items()} == {KNOWN: 6, UNKNOWN: 4}
    assert report["usage"]["by_model"][UNKNOWN]["prompt_tokens"] == sums[UNKNOWN]["prompt_tokens"]
    cost = report["cost"]
    assert cost["by_model"][UNKNOWN] is None and cost["unpriced_models"] == [UNKNOWN]
    assert cost["total"] == cost["by_model"][KNOWN] > 0  # the priced part; unpriced_models says what is left out


def test_with_no_model_priced_the_total_is_null(pipeline: Pipeline) -> None:
    pipeline.drop("inbox/unpriced.jsonl", jsonl(lines(3, UNKNOWN, "n")))
    pipeline.run()
    cost = pipeline.report("unpriced")["cost"]
    assert cost["total"] is None and cost["by_model"] == {UNKNOWN: None}


def test_lines_answered_in_a_later_round_count_once(make_pipeline: Any) -> None:
    # Given 30% of 100 lines failing their first attempt (re-driven, then answered)
    pipeline: Pipeline = make_pipeline()
    pipeline.emulator.faults.line_errors("rate_limit_exceeded", rate=0.3, seed=5, times_per_line=1)
    pipeline.drop("inbox/rounds.jsonl", jsonl(lines(100, KNOWN, "r")))
    pipeline.run()

    report = pipeline.report("rounds")
    assert len(report["rounds"]) == 2 and report["counts"]["succeeded"] == 100
    expected = summed_from_output(pipeline, "rounds")[KNOWN]
    total = report["usage"]["total"]
    assert (total["lines"], total["prompt_tokens"], total["completion_tokens"]) == (
        100,
        expected["prompt_tokens"],
        expected["completion_tokens"],
    )


def test_the_operator_s_prices_replace_the_list_prices(make_pipeline: Any) -> None:
    # Given an operator's table: the model at 1.00 / 2.00 per million, half price for batches
    table = {"models": {KNOWN: {"input_per_million": 1.0, "output_per_million": 2.0, "batch_discount": 0.5}}}
    pipeline: Pipeline = make_pipeline(PRICE_TABLE=json.dumps(table))
    pipeline.drop("inbox/own.jsonl", jsonl(lines(5, KNOWN, "o")))
    pipeline.run()

    report = pipeline.report("own")
    tokens = report["usage"]["total"]
    price = (tokens["prompt_tokens"] * 1.0 + tokens["completion_tokens"] * 2.0) / 1_000_000 * 0.5
    assert report["cost"]["total"] == pytest.approx(price) and report["cost"]["prices_as_of"] == "operator"


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ("not json", "is not a price table"),
        ('{"models": {"m": {"input_per_million": 1}}}', "models.m.output_per_million: Field required"),
        ('{"models": {"m": {"input_per_million": -1, "output_per_million": 1}}}', "models.m.input_per_million"),
        ('{"prices": {}}', "unknown keys ['prices']"),
    ],
)
def test_a_price_table_that_does_not_read_fails_at_start_naming_the_problem(table: str, says: str) -> None:
    environ = {
        "TABLE_NAME": "t",
        "SECRET_ID": "s",
        "INPUT_PREFIX": "inbox/",
        "OUTPUT_PREFIX": "outbox/",
        "WORK_PREFIX": "work/",
        "PRICE_TABLE": table,
    }
    with pytest.raises(ConfigurationError, match="PRICE_TABLE") as raised:
        Settings.from_environ(environ)
    assert says in str(raised.value) and "input_per_million" in str(raised.value)


# -- the estimate before any batch, and the guardrail -------------------------------------------------


def bounded(n: int, model: str, prefix: str, max_tokens: int | None, text: str) -> list[dict[str, Any]]:
    made = []
    for i in range(n):
        request = {"model": model, "messages": [{"role": "user", "content": text}]}
        if max_tokens is not None:
            request["max_tokens"] = max_tokens
        made.append(chat_line(f"{prefix}-{i}") | {"body": request})
    return made


def test_the_report_shows_the_estimate_beside_the_actual(pipeline: Pipeline) -> None:
    # Given 10 lines of 400 bytes of text with max_tokens 100, and 5 with no max_tokens, of a priced model
    text = "é" * 100 + "x" * 200  # 400 UTF-8 bytes: 100 estimated input tokens a line
    pipeline.drop(
        "inbox/estimated.jsonl", jsonl(bounded(10, KNOWN, "b", 100, text) + bounded(5, KNOWN, "u", None, text))
    )
    pipeline.run()

    estimate = pipeline.report("estimated")["estimate"]
    assert estimate["total"] == {
        "lines": 15,
        "input_tokens": 1500,
        "max_output_tokens": 1000,
        "lines_without_max_tokens": 5,
    }
    assert estimate["by_model"] == {KNOWN: estimate["total"]}
    assert estimate["cost"]["total"] == pytest.approx((1500 * 0.02 + 1000 * 0.05) / 1_000_000)
    assert estimate["cost"]["limit"] is None and "bytes" in estimate["method"]


def test_a_job_over_the_cost_limit_is_rejected_before_any_api_call(make_pipeline: Any) -> None:
    # Given a limit of 0.01 USD and a file that may cost more: 100 lines of 4,000 bytes, up to 4,000 tokens
    # out each, on glm-5.2 (1.10 in, 3.50 out per million): about 1.51 USD at most
    pipeline: Pipeline = make_pipeline(MAX_ESTIMATED_COST_PER_JOB="0.01")
    pipeline.drop("inbox/costly.jsonl", jsonl(bounded(100, "glm-5.2", "c", 4000, "y" * 4000)))

    # Then it is rejected with the estimate in its report, and the API was never called
    report = pipeline.report("costly")
    assert report["outcome"] == "rejected"
    (problem,) = report["validation_errors"]
    assert problem["code"] == "estimated_cost_too_high" and problem["line"] is None
    assert "up to 1.51 USD" in problem["message"] and "MaxEstimatedCostPerJob (0.01 USD)" in problem["message"]
    assert report["estimate"]["cost"]["limit"] == 0.01
    assert report["estimate"]["cost"]["total"] == pytest.approx((100_000 * 1.10 + 400_000 * 3.50) / 1_000_000)
    assert pipeline.emulator.calls == []

    # And a file under the limit runs as usual
    pipeline.drop("inbox/cheap.jsonl", jsonl(bounded(2, "glm-5.2", "d", 10, "short")))
    pipeline.run()
    assert pipeline.report("cheap")["outcome"] == "succeeded"


def test_a_price_table_in_ssm_is_read_at_run_time_over_the_parameter(make_pipeline: Any) -> None:
    import boto3

    # Given PRICE_TABLE pricing the model at 1/2, and an SSM parameter pricing it at 3/4
    ssm = boto3.client("ssm", region_name="us-east-1")
    ssm.put_parameter(
        Name="/batchdrop/prices-test",
        Type="String",
        Value=json.dumps({"models": {KNOWN: {"input_per_million": 3.0, "output_per_million": 4.0}}}),
    )
    table = {"models": {KNOWN: {"input_per_million": 1.0, "output_per_million": 2.0}}}
    pipeline: Pipeline = make_pipeline(PRICE_TABLE=json.dumps(table), PRICE_TABLE_PARAMETER="/batchdrop/prices-test")
    pipeline.drop("inbox/ssm.jsonl", jsonl(lines(4, KNOWN, "s")))
    pipeline.run()

    # Then the parameter's prices are the ones used
    report = pipeline.report("ssm")
    tokens = report["usage"]["total"]
    assert report["cost"]["total"] == pytest.approx(
        (tokens["prompt_tokens"] * 3 + tokens["completion_tokens"] * 4) / 1e6
    )


def test_an_unreadable_price_parameter_never_stops_the_job(make_pipeline: Any) -> None:
    # Given a parameter that does not exist
    pipeline: Pipeline = make_pipeline(PRICE_TABLE_PARAMETER="/batchdrop/no-such-prices")
    pipeline.drop("inbox/noprices.jsonl", jsonl(lines(2, KNOWN, "n")))
    pipeline.run()

    # Then the job ends as usual, priced from the shipped table
    report = pipeline.report("noprices")
    assert report["outcome"] == "succeeded" and report["cost"]["prices_as_of"].startswith("2026-08")
