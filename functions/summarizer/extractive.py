"""The offline summarizer: no network, no model, any language.

Sentences are scored by TF-IDF centrality: a word weighs more the more often the
article uses it, and less the more sentences it is spread over (so function
words that slipped past the lists weigh little); a sentence scores the weight of
its distinct words over the square root of its length. Early sentences get a
boost (articles put the news first), fragments and headings a penalty. The
summary is the best non-redundant sentences in article order; tags are the
heaviest words. Everything is linear in the article's length.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter

from functions.summarizer.errors import SummaryFailed
from functions.summarizer.languages import detect_language, is_function_word, stopwords
from functions.summarizer.schema import (
    KEY_POINT_MAX_WORDS,
    KEY_POINTS_MAX,
    KEY_POINTS_MIN,
    LEDE_MAX_WORDS,
    SUMMARY_MAX_WORDS,
    Summary,
    require_article_text,
    validate_summary_fields,
)
from functions.summarizer.sentences import (
    is_cjk,
    is_terminated,
    join_sentences,
    sentence_spans,
    truncate_words,
    word_count,
    words,
)

MODEL_ID = "extractive-v1"
NO_PROMPT = "none"  # no prompt is involved, so prompt changes never invalidate these summaries
TAG_COUNT = 5

_CLAUSE_BREAK = re.compile(r"\s*(?:[;:]|,|\s[–—-]\s)\s*")


class ExtractiveSummarizer:
    """A chain step that needs nothing but the text."""

    name = "extractive"
    model_id = MODEL_ID
    prompt_version = NO_PROMPT
    offline = True

    def summarize(self, text: str, title: str = "", language: str = "") -> Summary:
        started = time.monotonic()
        require_article_text(text)
        language = language or detect_language(text)
        sentences = [text[s:e] for s, e in sentence_spans(text)]
        stop = stopwords(language)
        tokens = [_content(words(s), stop) for s in sentences]
        title_words = set(_content(words(title), stop))
        weights, df = _keyword_weights(tokens, title_words)
        counts = [word_count(s) for s in sentences]
        ranking = _rank(sentences, tokens, counts, weights, title_words)

        fields = validate_summary_fields(
            {
                "lede": _lede(sentences, counts, ranking),
                "summary": _summary(sentences, counts, ranking, sum(counts)),
                "key_points": _key_points(sentences, counts, ranking),
                "tags": _tags(weights, df, len(sentences), text, has_stopwords=bool(stop)),
            }
        )
        return Summary.build(
            fields,
            language=language,
            model=MODEL_ID,
            prompt_version=NO_PROMPT,
            duration_ms=round((time.monotonic() - started) * 1000),
            chunks=1,
        )


def _content(tokens: list[str], stop: frozenset[str]) -> list[str]:
    return [t for t in tokens if (len(t) > 1 or is_cjk(t)) and not t.isdigit() and not is_function_word(t, stop)]


def _keyword_weights(tokens: list[list[str]], title: set[str]) -> tuple[dict[str, float], Counter]:
    tf = Counter(t for sentence in tokens for t in sentence)
    df = Counter(t for sentence in tokens for t in set(sentence))
    n = len(tokens)
    weights = {w: count * math.log(1 + n / df[w]) * (2.0 if w in title else 1.0) for w, count in tf.items()}
    return weights, df


def _rank(
    sentences: list[str], tokens: list[list[str]], counts: list[int], weights: dict[str, float], title: set[str]
) -> list[int]:
    """Sentence indexes, best first, near-duplicates last.

    Headings, captions and the title line are left out unless the article has
    too few real sentences to make its key points.
    """
    scores = []
    for i, (toks, count) in enumerate(zip(tokens, counts, strict=True)):
        distinct = set(toks)
        score = sum(weights[t] for t in distinct) / math.sqrt(len(distinct) + 1)
        score *= 1 + 0.8 / math.sqrt(1 + i)  # the news comes first
        if count < 6:
            score *= 0.3  # captions, bylines
        elif count > 50:
            score *= 0.7
        scores.append(score)
    kept: list[int] = []
    repeats: list[int] = []
    fragments: list[int] = []
    seen: list[set[str]] = []
    for i in sorted(range(len(sentences)), key=lambda i: -scores[i]):
        distinct = set(tokens[i])
        if not is_terminated(sentences[i]) or (title and _overlap(distinct, title) > 0.8):
            fragments.append(i)  # no sentence end: a heading, a list item, the title again
        # Only the top of the ranking is ever used, so compare there and stop early.
        elif len(seen) < 60 and any(_overlap(distinct, other) > 0.6 for other in seen):
            repeats.append(i)
        else:
            kept.append(i)
            if len(seen) < 60:
                seen.append(distinct)
    ranked = kept + repeats
    return ranked if len(ranked) >= KEY_POINTS_MIN else ranked + fragments


def _overlap(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


def _lede(sentences: list[str], counts: list[int], ranking: list[int]) -> str:
    for i in ranking[:10]:
        if 5 <= counts[i] <= LEDE_MAX_WORDS:
            return sentences[i]
    return truncate_words(sentences[ranking[0]], LEDE_MAX_WORDS)


def _summary(sentences: list[str], counts: list[int], ranking: list[int], total_words: int) -> str:
    # About a quarter of a short article, up to the limit for a long one.
    target = min(SUMMARY_MAX_WORDS, max(50, total_words // 4))
    chosen, used = [], 0
    for i in ranking[:200]:
        if used + counts[i] <= target:
            chosen.append(i)
            used += counts[i]
    if not chosen:  # even the best sentence is longer than the target
        return truncate_words(sentences[ranking[0]], SUMMARY_MAX_WORDS)
    return join_sentences([sentences[i] for i in sorted(chosen)])


def _key_points(sentences: list[str], counts: list[int], ranking: list[int]) -> list[str]:
    wanted = max(KEY_POINTS_MIN, min(KEY_POINTS_MAX, 2 + len(sentences) // 10))
    chosen = sorted([i for i in ranking if counts[i] >= 4][:wanted])
    points = [truncate_words(sentences[i], KEY_POINT_MAX_WORDS) for i in chosen]
    if len(points) < KEY_POINTS_MIN:
        # A very short article: its clauses are the points it makes.
        clauses = [c.strip() for s in sentences for c in _CLAUSE_BREAK.split(s)]
        points = [truncate_words(c, KEY_POINT_MAX_WORDS) for c in clauses if word_count(c) >= 3][:wanted]
    if len(points) < KEY_POINTS_MIN:
        raise SummaryFailed(f"article has too few sentences to make {KEY_POINTS_MIN} key points")
    return points


def _tags(weights: dict[str, float], df: Counter, n_sentences: int, text: str, *, has_stopwords: bool) -> list[str]:
    tags: list[str] = []
    for word in sorted(weights, key=lambda w: -weights[w]):
        if not is_cjk(word) and not has_stopwords and _looks_like_function_word(word, df[word], n_sentences):
            continue
        if not is_cjk(word) and len(word) < 3:
            continue
        tag = _grow_cjk(word, text) if is_cjk(word) else word
        if not any(tag in other or other in tag for other in tags):
            tags.append(tag)
            if len(tags) == TAG_COUNT:
                break
    return tags


def _looks_like_function_word(word: str, df: int, n_sentences: int) -> bool:
    # For a language without a word list: function words are short in every
    # spaced language, and in a long text a word found in most sentences says
    # little about the topic.
    return len(word) < 4 or (n_sentences >= 30 and df > 0.6 * n_sentences)


def _grow_cjk(seed: str, text: str) -> str:
    """Extend a CJK bigram to the longest phrase it (nearly) always sits in: 自転 → 自転車レーン.

    Bigrams are how unspaced text is scored, but they make poor tags; the usual
    neighbours of a frequent bigram recover the word without a dictionary.
    """
    text = text.lower()
    phrase, count = seed, text.count(seed)
    while len(phrase) < 8:
        neighbours: Counter = Counter()
        for m in re.finditer(re.escape(phrase), text):
            if m.start() > 0:
                neighbours[text[m.start() - 1] + phrase] += 1
            if m.end() < len(text):
                neighbours[phrase + text[m.end()]] += 1
        grown, seen = next(iter(neighbours.most_common(1)), ("", 0))
        added = grown.replace(phrase, "", 1)
        if seen < max(2, 0.8 * count) or not is_cjk(added) or is_function_word(added, frozenset()):
            return phrase
        phrase, count = grown, seen
    return phrase
