"""Sentences, words, languages and chunks: the text handling everything else stands on."""

from __future__ import annotations

import pytest

from functions.summarizer.chunker import ApproxTokenCounter, chunk_text
from functions.summarizer.languages import detect_language
from functions.summarizer.sentences import join_sentences, split_sentences, truncate_words, word_count, words
from tests.functions.summarizer import articles


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "Dr. Smith met J. R. R. Tolkien at 3.5 p.m. in the U.S. office. It rained! Did it? Yes.",
            ["Dr. Smith met J. R. R. Tolkien at 3.5 p.m. in the U.S. office.", "It rained!", "Did it?", "Yes."],
        ),
        (
            "Fruit, e.g. apples, etc. are sold. Prices fell… Then rose.",
            ["Fruit, e.g. apples, etc. are sold.", "Prices fell…", "Then rose."],
        ),
        ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
        (
            "Die Preise stiegen um 3,5 Prozent, z. B. bei Strom. Am 3. Oktober ist Feiertag. Gut.",
            ["Die Preise stiegen um 3,5 Prozent, z. B. bei Strom.", "Am 3. Oktober ist Feiertag.", "Gut."],
        ),
        ("¿Dónde está? Está aquí.", ["¿Dónde está?", "Está aquí."]),
        ("东京是日本的首都。人口很多！你去过吗？", ["东京是日本的首都。", "人口很多！", "你去过吗？"]),
        ("「行こう。」と彼は言った。", ["「行こう。」", "と彼は言った。"]),
        ("यह पहला वाक्य है। यह दूसरा है।", ["यह पहला वाक्य है।", "यह दूसरा है।"]),
        ("هل أنت هنا؟ نعم.", ["هل أنت هنا؟", "نعم."]),
        (
            "A heading\nThe first paragraph. Its second sentence.\n\n  Last line  ",
            ["A heading", "The first paragraph.", "Its second sentence.", "Last line"],
        ),
    ],
)
def test_sentences(text, expected):
    assert split_sentences(text) == expected


def test_words_and_counts_across_scripts():
    assert words("Straße, ÉCOLE and 2024!") == ["straße", "école", "and", "2024"]
    assert words("東京は首都") == ["東京", "京は", "は首", "首都"]  # CJK runs become bigrams
    assert word_count("one two, three — four") == 4
    assert word_count("東京は日本の首都です") == 5  # two CJK characters count as a word
    assert truncate_words("one two three four", 2) == "one two…"
    assert truncate_words("東京は日本の首都です", 2) == "東京は日…"
    assert truncate_words("short", 5) == "short"
    assert join_sentences(["東京。", "大阪。"]) == "東京。大阪。" and join_sentences(["A.", "B."]) == "A. B."


@pytest.mark.parametrize(
    "text, language",
    [
        (articles.ENGLISH, "en"),
        (articles.GERMAN, "de"),
        (articles.FRENCH, "fr"),
        (articles.CHINESE, "zh"),
        (articles.JAPANESE, "ja"),
        ("El consejo aprobó los carriles para bicicletas y los comerciantes se oponen.", "es"),
        ("Городской совет одобрил строительство велосипедных дорожек, и это было важно.", "ru"),
        ("시의회는 자전거 도로 건설을 승인했다.", "ko"),
        ("12345 67890", "und"),
    ],
)
def test_language_detection(text, language):
    assert detect_language(text) == language


def test_chunks_fit_the_budget_and_keep_every_word_in_order():
    counter = ApproxTokenCounter()
    text = articles.long_article(5000)

    chunks = chunk_text(text, 300, counter)

    assert len(chunks) > 10 and all(counter.count(c) <= 300 for c in chunks)
    assert " ".join(chunks).split() == text.split()
    assert all(c in text for c in chunks)  # slices of the original, nothing rewritten
    assert sum(c.endswith(".") for c in chunks) == len(chunks)  # cut between sentences


def test_chunks_prefer_paragraph_boundaries():
    paragraphs = [" ".join([f"p{i}w{j}" for j in range(30)]) + "." for i in range(6)]
    chunks = chunk_text("\n".join(paragraphs), 150, ApproxTokenCounter())
    assert all(chunk.count("\n") + 1 == len({w[:2] for w in chunk.split()}) for chunk in chunks)
    assert all(any(chunk.startswith(p) for p in paragraphs) for chunk in chunks)


def test_cjk_and_unbreakable_text_is_still_chunked():
    counter = ApproxTokenCounter()
    text = articles.CHINESE * 5
    chunks = chunk_text(text, 60, counter)
    assert all(counter.count(c) <= 60 for c in chunks) and "".join(chunks) == text.replace("\n", "")

    blob = "data:" + "A" * 3000  # one giant "word"
    chunks = chunk_text(blob, 50, counter)
    assert all(counter.count(c) <= 50 for c in chunks) and "".join(chunks) == blob


def test_approximate_token_count_errs_high():
    counter = ApproxTokenCounter()
    english = articles.ENGLISH
    assert 1.3 * len(english.split()) <= counter.count(english) <= 2.2 * len(english.split())
    assert counter.count("東京都") >= 3
    assert counter.count("") == 0
