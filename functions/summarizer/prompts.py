"""Every prompt the LLM path sends. Change any wording here and bump PROMPT_VERSION:
the version is part of the summary cache key, so old summaries are not reused
for a new prompt."""

from __future__ import annotations

from functions.summarizer.schema import (
    KEY_POINT_MAX_WORDS,
    KEY_POINTS_MAX,
    KEY_POINTS_MIN,
    LEDE_MAX_WORDS,
    SUMMARY_MAX_WORDS,
)

PROMPT_VERSION = "summary-v1"
NOTES_MAX_WORDS = 120
_TITLE_MAX_CHARS = 300  # a title is a line; a runaway one must not eat the context

Message = dict[str, str]

_SUMMARY_SYSTEM = f"""You summarize articles faithfully and concisely, using only facts stated in the text.
Reply with exactly one JSON object and nothing else: no markdown, no code fences, no comments.
{{"lede": "...", "summary": "...", "key_points": ["...", "..."], "tags": ["..."], "language": "..."}}
Rules:
- lede: one sentence of at most {LEDE_MAX_WORDS} words with the most important fact.
- summary: at most {SUMMARY_MAX_WORDS} words covering the whole article.
- key_points: {KEY_POINTS_MIN} to {KEY_POINTS_MAX} distinct points, each at most {KEY_POINT_MAX_WORDS} words.
- tags: 3 to 6 short lowercase topic keywords.
- language: the ISO 639-1 code of the article's language, e.g. "en".
Write the lede, summary and key points in the article's language."""

_NOTES_SYSTEM = """You take notes on one part of a long article so that the whole article can be summarized later.
Keep facts, names, numbers, dates and claims; drop repetition and boilerplate. Write in the article's language."""


def single_pass_messages(text: str, title: str = "", language: str = "") -> list[Message]:
    return [
        {"role": "system", "content": _SUMMARY_SYSTEM},
        {"role": "user", "content": f"{_header(title, language)}Article:\n{text}\n\nReply with the JSON object."},
    ]


def map_messages(text: str, title: str, language: str, part: int, parts: int) -> list[Message]:
    """Notes on one chunk (also used to condense notes when there are too many to reduce at once)."""
    return [
        {"role": "system", "content": _NOTES_SYSTEM},
        {
            "role": "user",
            "content": f"{_header(title, language)}Part {part} of {parts}:\n{text}\n\n"
            f"Write notes on this part as short lines, at most {NOTES_MAX_WORDS} words "
            "in all. Notes only, no introduction.",
        },
    ]


def reduce_messages(notes: list[str], title: str = "", language: str = "") -> list[Message]:
    parts = "\n\n".join(f"Notes on part {i} of {len(notes)}:\n{note}" for i, note in enumerate(notes, 1))
    return [
        {"role": "system", "content": _SUMMARY_SYSTEM},
        {
            "role": "user",
            "content": f"{_header(title, language)}The article was too long to read at once. "
            "These are notes on each of its parts, in order:\n\n"
            f"{parts}\n\nSummarize the whole article. Reply with the JSON object.",
        },
    ]


def with_correction(messages: list[Message], reason: str) -> list[Message]:
    """The same request with a note on what was wrong with the last reply.

    The note goes into the last user turn rather than a new one, and the bad
    reply is not echoed back: that keeps turns alternating (some chat templates
    insist) and the request within the context budget.
    """
    last = messages[-1]
    note = (
        f"\n\nYour previous reply could not be used: {reason}. "
        "Reply again with only the JSON object, following every rule."
    )
    return messages[:-1] + [{"role": last["role"], "content": last["content"] + note}]


def _header(title: str, language: str) -> str:
    lines = []
    if title.strip():
        lines.append(f"Title: {' '.join(title.split())[:_TITLE_MAX_CHARS]}")
    if language:
        lines.append(f"Language: {language}")
    return "".join(f"{line}\n" for line in lines) + ("\n" if lines else "")
