"""How fast the offline extractive summarizer is on long articles (no network, one core).

    .venv/bin/python bench/summarize.py

Prints the seconds per summary for articles of 5,000, 50,000 and 200,000 words;
the summarizer should stay well under the push's deadline even for the longest.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from functions.summarizer.extractive import ExtractiveSummarizer  # noqa: E402
from tests.functions.summarizer import articles  # noqa: E402


def main() -> None:
    summarizer = ExtractiveSummarizer()
    for words in (5_000, 50_000, 200_000):
        text = articles.long_article(words)
        runs = []
        for _ in range(3):
            started = time.perf_counter()
            summarizer.summarize(text, "", "")
            runs.append(time.perf_counter() - started)
        print(f"{words:>8,} words: {statistics.median(runs):.2f} s (median of 3)")


if __name__ == "__main__":
    main()
