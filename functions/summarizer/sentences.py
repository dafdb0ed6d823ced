"""Sentence splitting, word tokenizing and word counting with no model and no downloads.

Works on text in any script: Latin and other spaced scripts end a sentence with
``.!?…`` (or ``। ؟ ።`` …) followed by a space and a non-lowercase letter, with
abbreviations, initials, decimals and German ordinals held together; Chinese
and Japanese end one at ``。！？`` with no space after. A line break always ends
a sentence (readability text has one paragraph per line).

Chinese and Japanese have no spaces between words, so for scoring a run of
kana/Han characters becomes overlapping character bigrams, and for length limits
two such characters count as one word.
"""

from __future__ import annotations

import math
import re

# Kana and Han ideographs: scripts written without spaces between words.
CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"

_LINE = re.compile(r"[^\r\n]+")
_CJK_ENDS = "。！？｡"
_OTHER_ENDS = ".!?…।॥؟۔።။։"  # Latin, Devanagari, Arabic/Urdu, Ethiopic, Burmese, Armenian
_CLOSING = "\"'”’»)\\]」』）】〕》"  # quotes and brackets that may follow a sentence end
_BOUNDARY = re.compile(rf"(?P<cjk>[{_CJK_ENDS}]+)[{_CLOSING}]*|[{_OTHER_ENDS}]+[{_CLOSING}]*(?=\s|$)")
_TERMINATED = re.compile(rf"[{_CJK_ENDS}{_OTHER_ENDS}][{_CLOSING}]*$")
_OPENERS = "\"'“‘«([{¿¡„"
_CLOSERS_CJK = _CJK_ENDS + "」』）】〕》"  # after these, no space before the next sentence

# Lower-case, without the final period. Single letters (initials, "z. B.") and
# dotted forms ("e.g.", "U.S.") are recognised without being listed.
_ABBREVIATIONS = frozenset(
    """
mr mrs ms dr prof sr jr st mt ft vs etc approx ca cf al fig figs vol pp ed eds inc ltd corp co
gen gov sen rep rev hon capt col lt sgt jan feb mar apr jun jul aug sep sept oct nov dec
bzw usw ggf evtl nr str hr fr vgl bspw inkl sog mme mlle av bd sra srta ud uds dra pág sig dott ecc
""".split()
)
# "am 3. Oktober": a day number with a period before a month is an ordinal, not a sentence end.
_MONTHS = frozenset(
    """
januar jänner februar märz april mai juni juli august september oktober november dezember
""".split()
)

_SCORING_TOKEN = re.compile(rf"(?P<cjk>[{CJK}]+)|[^\W_{CJK}]+")
_CJK_CHAR = re.compile(f"[{CJK}]")
_SPACED_TOKEN = re.compile(rf"[^\s{CJK}]+")
_COUNTED_TOKEN = re.compile(rf"[{CJK}]|[^\s{CJK}]+")
_WORD_CHAR = re.compile(r"\w")


def paragraph_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """(start, end) of each non-blank line, whitespace trimmed."""
    spans = []
    for m in _LINE.finditer(text, start, len(text) if end is None else end):
        span = _trim(text, m.start(), m.end())
        if span:
            spans.append(span)
    return spans


def sentence_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """(start, end) of each sentence, whitespace trimmed, in order."""
    spans = []
    for p_start, p_end in paragraph_spans(text, start, end):
        cut = p_start
        for m in _BOUNDARY.finditer(text, p_start, p_end):
            if m.group("cjk") or _ends_sentence(text, m.start(), m.end(), p_start, p_end):
                span = _trim(text, cut, m.end())
                if span:
                    spans.append(span)
                cut = m.end()
        span = _trim(text, cut, p_end)
        if span:
            spans.append(span)
    return spans


def split_sentences(text: str) -> list[str]:
    return [text[s:e] for s, e in sentence_spans(text)]


def join_sentences(sentences: list[str]) -> str:
    """Join with a space, except after a CJK sentence end (those take none)."""
    out = ""
    for sentence in sentences:
        if out and out[-1] not in _CLOSERS_CJK:
            out += " "
        out += sentence
    return out


def words(text: str) -> list[str]:
    """Lower-case scoring tokens: words, and character bigrams for CJK runs."""
    tokens = []
    for m in _SCORING_TOKEN.finditer(text.lower()):
        run = m.group()
        if m.group("cjk"):
            tokens.extend([run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)])
        else:
            tokens.append(run)
    return tokens


def is_terminated(sentence: str) -> bool:
    """Ends like a sentence (a heading or list item does not)."""
    return bool(_TERMINATED.search(sentence))


def is_cjk(token: str) -> bool:
    return bool(_CJK_CHAR.match(token))


def word_count(text: str) -> int:
    """Words for length limits: spaced words, plus one per two CJK characters."""
    spaced = sum(1 for token in _SPACED_TOKEN.findall(text) if _WORD_CHAR.search(token))
    return spaced + math.ceil(len(_CJK_CHAR.findall(text)) / 2)


def truncate_words(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` words (as ``word_count`` counts), with "…" if cut."""
    total, cut = 0.0, 0
    for m in _COUNTED_TOKEN.finditer(text):
        token = m.group()
        total += 0.5 if _CJK_CHAR.match(token) else (1 if _WORD_CHAR.search(token) else 0)
        if total > limit:
            return text[:cut].rstrip(" ,;:–—-") + "…"
        cut = m.end()
    return text


def _ends_sentence(text: str, t_start: int, t_end: int, p_start: int, p_end: int) -> bool:
    nxt = t_end
    while nxt < p_end and (text[nxt].isspace() or text[nxt] in _OPENERS):
        nxt += 1
    if nxt < p_end and text[nxt].islower():
        return False  # "etc. and so on", "z. B. bei": the sentence goes on
    if text[t_start:t_end] != ".":
        return True
    word_start = t_start
    while word_start > p_start and not text[word_start - 1].isspace():
        word_start -= 1
    word = text[word_start:t_start].lstrip(_OPENERS).casefold()
    if len(word) == 1 and word.isalpha():
        return False  # an initial: "J. R. R. Tolkien"
    if word in _ABBREVIATIONS or ("." in word and all(len(part) <= 2 for part in word.split("."))):
        return False  # "Dr.", "e.g.", "U.S."
    if word.isdigit() and len(word) <= 2:
        next_word = text[nxt : nxt + 12].split(maxsplit=1)[0].casefold() if nxt < p_end else ""
        return next_word.rstrip(",.") not in _MONTHS
    return True


def _trim(text: str, start: int, end: int) -> tuple[int, int] | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None
