"""Find the summary JSON in what a model wrote, mend it if it was cut off, and validate it.

Models wrap JSON in code fences, put a sentence before or after it, leave
trailing commas, and stop mid-string when they hit their token limit. A cut-off
reply is closed at its last complete value (the half-written value is dropped,
not guessed at); if what remains passes the schema it is used, otherwise the
caller re-asks.
"""

from __future__ import annotations

import json
import re
from typing import Any

from functions.summarizer.errors import SummaryParseError, SummaryValidationError
from functions.summarizer.schema import validate_summary_fields

_FENCE = re.compile(r"```[\w-]*[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)
_LITERAL = re.compile(r'[^\s,\]}:"]+')
_CLOSERS = {"{": "}", "[": "]"}


def parse_summary(raw_text: str) -> dict[str, Any]:
    """The validated summary fields in ``raw_text``; ``SummaryParseError`` if there are none."""
    fenced = _FENCE.search(raw_text)
    body = fenced.group(1) if fenced and "{" in fenced.group(1) else raw_text
    start = body.find("{")
    if start < 0:
        raise SummaryParseError(raw_text, "the reply holds no JSON object")
    body = body[start:]
    repaired = False
    try:
        obj, _ = json.JSONDecoder().raw_decode(body)  # ignores prose after the object
    except json.JSONDecodeError:
        repaired = True
        try:
            obj = json.loads(repair_json(body))
        except json.JSONDecodeError as exc:
            raise SummaryParseError(raw_text, f"the reply is not valid JSON ({exc.msg})") from None
    try:
        return validate_summary_fields(obj)
    except SummaryValidationError as exc:
        cut = " (the reply looks cut off or malformed; a shorter answer may fit)" if repaired else ""
        raise SummaryParseError(raw_text, f"{exc}{cut}") from exc


def repair_json(text: str) -> str:
    """``text`` (starting at its first ``{``) as JSON: trailing commas dropped, a cut-off end closed.

    Stops at the end of the first top-level value, so trailing prose is ignored.
    """
    out: list[str] = []
    stack: list[list[str]] = []  # [bracket, what comes next: key | colon | value | comma]
    safe: tuple[int, str] | None = None  # (len(out), closers) after the last complete value

    def mark_safe() -> None:
        nonlocal safe
        safe = (len(out), "".join(_CLOSERS[b] for b, _ in reversed(stack)))

    def value_done() -> None:
        if stack:
            stack[-1][1] = "comma"
        mark_safe()

    i = 0
    while i < len(text):
        ch = text[i]
        top = stack[-1] if stack else None
        if ch.isspace():
            i += 1
            continue
        if ch == '"':
            end = _string_end(text, i)
            if end < 0:
                break  # cut off inside a string
            out.append(text[i:end])
            i = end
            if top and top[0] == "{" and top[1] == "key":
                top[1] = "colon"
            else:
                value_done()
            continue
        if ch in "{[":
            stack.append([ch, "key" if ch == "{" else "value"])
            out.append(ch)
            mark_safe()  # an empty container is complete
        elif ch in "}]":
            while out and out[-1] == ",":
                out.pop()  # trailing comma
            if stack:
                stack.pop()
            out.append(ch)
            if not stack:
                return "".join(out)
            value_done()
        elif ch == ":":
            if top:
                top[1] = "value"
            out.append(ch)
        elif ch == ",":
            if top:
                top[1] = "key" if top[0] == "{" else "value"
            out.append(ch)
        else:
            m = _LITERAL.match(text, i)
            if not m or m.end() >= len(text):
                break  # cut off inside a number or literal (or junk): drop it
            out.append(m.group())
            i = m.end()
            value_done()
            continue
        i += 1
    if safe is None:
        return "".join(out)
    kept, closers = safe
    return "".join(out[:kept]) + closers


def _string_end(text: str, start: int) -> int:
    """Index just past the string opening at ``start``, or -1 if it never closes."""
    i = start + 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
        elif text[i] == '"':
            return i + 1
        else:
            i += 1
    return -1
