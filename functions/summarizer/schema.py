"""The summary every provider must produce, and the rules it is checked against."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from functions.summarizer.errors import SummaryFailed, SummaryValidationError
from functions.summarizer.sentences import word_count

LEDE_MAX_WORDS = 30
SUMMARY_MAX_WORDS = 150
KEY_POINTS_MIN, KEY_POINTS_MAX = 3, 7
KEY_POINT_MAX_WORDS = 40
TAGS_MAX = 10
TAG_MAX_CHARS = 40
MIN_ARTICLE_WORDS = 10


@dataclass(frozen=True)
class Summary:
    lede: str
    summary: str
    key_points: tuple[str, ...]
    tags: tuple[str, ...]
    language: str
    model: str
    prompt_version: str
    tokens_in: int = 0
    tokens_out: int = 0
    duration_ms: int = 0
    chunks: int = 1  # article chunks mapped; 1 when the article was read in one go

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["key_points"], data["tags"] = list(self.key_points), list(self.tags)
        return data

    @classmethod
    def build(cls, fields: dict[str, Any], **meta: Any) -> Summary:
        """From validated content fields plus metadata (language, model, prompt_version, counts)."""
        return cls(
            lede=fields["lede"],
            summary=fields["summary"],
            key_points=tuple(fields["key_points"]),
            tags=tuple(fields["tags"]),
            **meta,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Summary:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["key_points"] = tuple(values.get("key_points", ()))
        values["tags"] = tuple(values.get("tags", ()))
        return cls(**values)


def validate_summary_fields(obj: Any) -> dict[str, Any]:
    """The content fields of a summary, normalized; ``SummaryValidationError`` says what is wrong.

    Required: ``lede``, ``summary``, ``key_points``. ``tags`` and ``language`` are
    optional, so an answer cut off after its key points is still a summary.
    """
    if not isinstance(obj, dict):
        raise SummaryValidationError(f"summary must be a JSON object, got {type(obj).__name__}")
    lede = _text(obj, "lede", LEDE_MAX_WORDS)
    summary = _text(obj, "summary", SUMMARY_MAX_WORDS)

    points = obj.get("key_points")
    if not isinstance(points, list) or not all(isinstance(p, str) for p in points):
        raise SummaryValidationError("key_points must be a list of strings")
    points = [_clean(p) for p in points if p.strip()]
    if len(points) < KEY_POINTS_MIN:
        raise SummaryValidationError(f"key_points has {len(points)} items; need {KEY_POINTS_MIN} to {KEY_POINTS_MAX}")
    for point in points:
        if word_count(point) > KEY_POINT_MAX_WORDS:
            raise SummaryValidationError(f"a key point has {word_count(point)} words; at most {KEY_POINT_MAX_WORDS}")

    tags = obj.get("tags", [])
    if isinstance(tags, str):  # "a, b, c" is a common slip; the meaning is clear
        tags = tags.split(",")
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise SummaryValidationError("tags must be a list of strings")
    clean_tags = []
    for tag in tags:
        tag = _clean(tag).lstrip("#").lower()
        # A sentence-long "tag" is not a tag; dropping it loses nothing.
        if tag and len(tag) <= TAG_MAX_CHARS and tag not in clean_tags:
            clean_tags.append(tag)

    language = obj.get("language", "")
    language = _clean(language).lower() if isinstance(language, str) and len(language) <= 20 else ""
    # Extra key points beyond the maximum are surplus, not an error worth a re-ask.
    return {
        "lede": lede,
        "summary": summary,
        "key_points": points[:KEY_POINTS_MAX],
        "tags": clean_tags[:TAGS_MAX],
        "language": language,
    }


def require_article_text(text: str) -> None:
    """Refuse an empty or near-empty article before anything is called."""
    if word_count(text) < MIN_ARTICLE_WORDS:
        raise SummaryFailed("article has no text to summarize")


def _text(obj: dict[str, Any], name: str, max_words: int) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value.strip():
        raise SummaryValidationError(f"{name} must be a non-empty string")
    value = _clean(value)
    if word_count(value) > max_words:
        raise SummaryValidationError(f"{name} has {word_count(value)} words; at most {max_words}")
    return value


def _clean(value: str) -> str:
    return " ".join(value.split())
