"""The offline default: no network, no model, any language."""

from __future__ import annotations

import pytest

from functions.summarizer.errors import SummaryFailed
from functions.summarizer.extractive import MODEL_ID, ExtractiveSummarizer
from functions.summarizer.schema import Summary, validate_summary_fields
from functions.summarizer.sentences import word_count
from tests.functions.summarizer import articles

summarize = ExtractiveSummarizer().summarize


def _assert_valid(summary: Summary, text: str) -> None:
    assert validate_summary_fields(summary.to_dict())
    assert word_count(summary.lede) <= 30 and word_count(summary.summary) <= 150
    assert 3 <= len(summary.key_points) <= 7
    assert summary.lede in text  # extractive: sentences from the article, not invented
    assert all(point in text for point in summary.key_points)
    assert summary.tags and all(tag == tag.lower() for tag in summary.tags)
    assert (summary.model, summary.prompt_version, summary.tokens_in, summary.chunks) == (MODEL_ID, "none", 0, 1)


def test_english_article():
    summary = summarize(articles.ENGLISH, title=articles.ENGLISH_TITLE)

    _assert_valid(summary, articles.ENGLISH)
    assert summary.language == "en"
    assert summary.lede.startswith("The city council voted 7 to 2")  # the news, not the headline
    assert "Photo: City Hall" not in summary.summary  # captions and headings are left out
    assert {"bicycle", "lanes", "council"} <= set(summary.tags)
    assert not {"the", "said", "and"} & set(summary.tags)


def test_german_article():
    summary = summarize(articles.GERMAN, title=articles.GERMAN_TITLE)

    _assert_valid(summary, articles.GERMAN)
    assert summary.language == "de"
    assert "radwege" in summary.tags and not {"die", "der", "und"} & set(summary.tags)
    assert "Die Radwege sollen bis zum 3. Oktober nächsten Jahres fertig sein" in summary.summary


def test_french_article():
    summary = summarize(articles.FRENCH)

    _assert_valid(summary, articles.FRENCH)
    assert summary.language == "fr" and "pistes" in summary.tags


@pytest.mark.parametrize(
    "text, language, tag",
    [
        (articles.CHINESE, "zh", "自行车道"),
        (articles.JAPANESE, "ja", "自転車レーン"),
    ],
)
def test_cjk_articles(text, language, tag):
    summary = summarize(text)

    _assert_valid(summary, text)
    assert summary.language == language
    assert tag in summary.tags  # whole words, grown from character bigrams
    assert summary.lede.endswith("。")


def test_language_without_a_word_list_filters_common_words_statistically():
    polish = (
        "Rada miasta zatwierdziła we wtorek budowę czterdziestu kilometrów dróg rowerowych w centrum. "
        "Plan burmistrza zastąpi miejsca parkingowe na sześciu ulicach drogami rowerowymi. "
        "Zwolennicy mówią, że drogi rowerowe poprawią bezpieczeństwo i się opłacą. "
        "Kupcy z głównej ulicy sprzeciwiają się planowi, bo boją się utraty klientów. "
        "Budowa dróg rowerowych ma się zacząć wiosną i kosztować około 18,5 miliona złotych."
    )
    summary = summarize(polish)

    _assert_valid(summary, polish)
    assert summary.language == "und" and "rowerowych" in summary.tags
    assert not {"się", "na", "we", "bo"} & set(summary.tags)


def test_given_language_is_kept():
    assert summarize(articles.ENGLISH, language="en-GB").language == "en-GB"


@pytest.mark.parametrize("text", ["", " \n\n \t", "Too short."])
def test_empty_article_fails_clearly(text):
    with pytest.raises(SummaryFailed, match="^article has no text to summarize$") as failure:
        summarize(text)
    assert not failure.value.transient


def test_short_article_uses_clauses_for_key_points():
    text = (
        "The museum reopened on Monday after a two-year renovation, adding three new galleries; "
        "visitors queued for hours, and tickets sold out by noon."
    )
    summary = summarize(text)
    assert validate_summary_fields(summary.to_dict()) and len(summary.key_points) == 3


def test_one_long_sentence_is_not_enough_for_key_points():
    with pytest.raises(SummaryFailed, match="too few sentences to make 3 key points"):
        summarize(" ".join(["word"] * 40))


def test_a_long_article_gets_a_valid_summary():
    """(How fast: bench/summarize.py.)"""
    text = articles.long_article(50_000)
    summary = summarize(text)
    _assert_valid(summary, text)
    assert len(summary.key_points) == 7
