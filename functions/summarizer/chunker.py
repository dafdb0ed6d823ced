"""Cut an article into pieces that each fit a model's context, on natural boundaries.

Pieces break between paragraphs where they can, else between sentences, else
between words, and only as a last resort inside a word. Each piece is a slice
of the original text, so nothing is lost or rewritten.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Protocol

from functions.summarizer.sentences import CJK, paragraph_spans, sentence_spans

Span = tuple[int, int]


class TokenCounter(Protocol):
    def count(self, text: str) -> int: ...


# Scripts most tokenizers spend a token or more per character on.
_DENSE = CJK + "\uac00-\ud7af\u0e00-\u0e7f"
_PIECE = re.compile(rf"(?P<dense>[{_DENSE}])|(?P<word>[^\W_{_DENSE}]+)|[^\w\s]")


class ApproxTokenCounter:
    """Tokens estimated without a tokenizer, erring high so a piece never overflows.

    An ASCII word is one token plus one per six letters, other words one per two
    letters, a CJK/Hangul/Thai character one and a half (older tokenizers fall
    back to bytes), punctuation one each; then 10% on top. English news comes
    out at about 1.6 tokens a word, against roughly 1.3 for real tokenizers. The
    count is additive over pieces (never less than that of the joined text),
    which packing relies on. Plug in a real tokenizer through ``TokenCounter``.
    """

    def count(self, text: str) -> int:
        total = 0.0
        for m in _PIECE.finditer(text):
            kind = m.lastgroup
            if kind == "dense":
                total += 1.5
            elif kind == "word":
                word = m.group()
                total += 1 + len(word) // 6 if word.isascii() else math.ceil(len(word) / 2)
            else:
                total += 1
        return math.ceil(total * 1.1)


def count_messages(messages: list[dict[str, str]], counter: TokenCounter) -> int:
    # Chat formats add a few tokens of framing per message.
    return sum(counter.count(m["content"]) + 4 for m in messages)


def chunk_text(text: str, budget: int, counter: TokenCounter) -> list[str]:
    """Consecutive slices of ``text``, each at most ``budget`` tokens."""
    if budget < 16:
        raise ValueError(f"chunk budget of {budget} tokens is too small to be useful")
    return [text[s:e] for s, e in _pack(text, paragraph_spans(text), 0, budget, counter)]


_WORD = re.compile(rf"[{_DENSE}]|\S+")


def _word_spans(text: str, start: int, end: int) -> list[Span]:
    return [m.span() for m in _WORD.finditer(text, start, end)]


# How a piece that is too big is cut, finest last.
_SPLITTERS: tuple[Callable[[str, int, int], list[Span]], ...] = (sentence_spans, _word_spans)


def _pack(text: str, spans: list[Span], level: int, budget: int, counter: TokenCounter) -> list[Span]:
    """Greedily join consecutive spans into chunks within ``budget``; cut the ones too big alone."""
    chunks: list[Span] = []
    current: Span | None = None
    used = 0
    for start, end in spans:
        tokens = counter.count(text[start:end])
        if tokens > budget:
            if current:
                chunks.append(current)
                current, used = None, 0
            finer, next_level = _split(text, start, end, level)
            chunks.extend(_pack(text, finer, next_level, budget, counter))
            continue
        if current and used + tokens > budget:
            chunks.append(current)
            current, used = None, 0
        current = (current[0] if current else start, end)
        used += tokens
    if current:
        chunks.append(current)
    return chunks


def _split(text: str, start: int, end: int, level: int) -> tuple[list[Span], int]:
    while level < len(_SPLITTERS):
        spans = _SPLITTERS[level](text, start, end)
        level += 1
        if len(spans) > 1:
            return spans, level
    middle = (start + end) // 2  # one enormous "word" (a data URL, say): halve it
    return [(start, middle), (middle, end)], level
