"""Finding, mending and validating the summary JSON a model wrote."""

from __future__ import annotations

import json

import pytest

from functions.summarizer.errors import SummaryParseError, SummaryValidationError
from functions.summarizer.parser import parse_summary, repair_json
from functions.summarizer.schema import Summary, validate_summary_fields
from tests.functions.summarizer.stub_llm import GOOD_SUMMARY

GOOD = json.dumps(GOOD_SUMMARY)


@pytest.mark.parametrize(
    "reply",
    [
        GOOD,
        f"```json\n{GOOD}\n```",
        f"Here is the summary you asked for:\n\n{GOOD}\n\nI hope this helps!",
        f"```\n{GOOD}",  # fence never closed
        GOOD.replace('"]', '",]').replace('"}', '",}'),  # trailing commas
    ],
)
def test_json_is_found_in_what_models_write(reply):
    assert parse_summary(reply)["lede"] == GOOD_SUMMARY["lede"]


@pytest.mark.parametrize(
    "cut, expected",
    [
        ('{"lede": "x", "summ', '{"lede":"x"}'),
        ('{"a": ["b", "c",', '{"a":["b","c"]}'),
        ('{"a": ["b", "c', '{"a":["b"]}'),
        ('{"a": [1, 2], "b": {"c": tr', '{"a":[1,2],"b":{}}'),
        ('{"a": "q\\"', "{}"),
        ('{"a": {', '{"a":{}}'),
        ('{"a": "b"} and then prose {', '{"a":"b"}'),
        ('{"a": "x\\u00e9 [not, a, list"', '{"a":"x\\u00e9 [not, a, list"}'),
    ],
)
def test_cut_off_json_is_closed_at_its_last_complete_value(cut, expected):
    assert repair_json(cut) == expected
    json.loads(repair_json(cut))


@pytest.mark.parametrize(
    "reply, reason",
    [
        ("I cannot summarize this article.", "no JSON object"),
        ("{lede: unquoted}", "not valid JSON"),
        ('{"lede": "only"}', "summary must be a non-empty string"),
        (GOOD[: GOOD.index("Shop owners")], "cut off"),
        ('["a list"]', "no JSON object"),
    ],
)
def test_unusable_replies_keep_the_raw_text_and_say_why(reply, reason):
    with pytest.raises(SummaryParseError) as failure:
        parse_summary(reply)
    assert failure.value.raw_text == reply and reason in failure.value.reason


def test_schema_rules_and_normalization():
    fields = validate_summary_fields(
        {
            **GOOD_SUMMARY,
            "tags": "Cycling, #Transport,  city   council, cycling",
            "key_points": GOOD_SUMMARY["key_points"] * 3,
            "language": "EN",
        }
    )
    assert fields["tags"] == ["cycling", "transport", "city council"]
    assert len(fields["key_points"]) == 7 and fields["language"] == "en"
    assert (
        validate_summary_fields({k: v for k, v in GOOD_SUMMARY.items() if k not in ("tags", "language")})["tags"] == []
    )

    for bad, message in [
        ([], "must be a JSON object"),
        ({**GOOD_SUMMARY, "lede": " ".join(["w"] * 31)}, "lede has 31 words; at most 30"),
        ({**GOOD_SUMMARY, "summary": " ".join(["w"] * 151)}, "summary has 151 words; at most 150"),
        ({**GOOD_SUMMARY, "summary": "   "}, "summary must be a non-empty string"),
        ({**GOOD_SUMMARY, "key_points": ["one", "two"]}, "key_points has 2 items; need 3 to 7"),
        ({**GOOD_SUMMARY, "key_points": "one. two. three."}, "key_points must be a list of strings"),
        ({**GOOD_SUMMARY, "key_points": ["a", "b", " ".join(["w"] * 41)]}, "a key point has 41 words"),
        ({**GOOD_SUMMARY, "tags": [1, 2]}, "tags must be a list of strings"),
    ]:
        with pytest.raises(SummaryValidationError, match=message):
            validate_summary_fields(bad)


def test_summary_round_trips_through_a_dict():
    summary = Summary.build(
        validate_summary_fields(GOOD_SUMMARY),
        language="en",
        model="m",
        prompt_version="p",
        tokens_in=3,
        tokens_out=4,
        duration_ms=5,
        chunks=2,
    )
    data = summary.to_dict()
    assert data["key_points"] == GOOD_SUMMARY["key_points"] and isinstance(data["tags"], list)
    assert json.loads(json.dumps(data)) == data
    assert Summary.from_dict(data) == summary
