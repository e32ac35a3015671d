"""Count words: each word with how often it occurs, most frequent first.

words (the default tokenizer): lower-cased runs of letters, digits and '_' with inner
apostrophes ("don't"); whitespace: what ASCII whitespace separates, case and punctuation
kept. Keys are the words as UTF-8 bytes.

This job uses the chunk-level map (``chunk_mapper``): it counts the raw bytes of each
split in C (bytes.translate, bytes.split, dict counting) instead of calling a Python
function per line, and normalises each distinct word once.
"""

from pymr.api import count, sum_values
from pymr.wordtokens import TOKENIZERS, Combiner

PARAMS = {"tokenizer": "words"}
ORDER = "value"
FIELDS = ("word", "count")


class WordCounter:
    """The chunk mapper: raw bytes in, {word: count} out."""

    def __init__(self, tokenizer: str) -> None:
        self.combiner = Combiner(tokenizer)

    def add(self, data: bytes) -> None:
        self.combiner.add(data)

    def size(self) -> int:
        return self.combiner.distinct_raw()

    def finish(self) -> dict[bytes, int]:
        counts, bad = self.combiner.finish()
        count("words", sum(counts.values()))
        if bad:
            count("invalid_utf8", bad)
        return counts


def setup(params: dict[str, str]) -> None:
    if params["tokenizer"] not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {params['tokenizer']!r}; choose "
                         + " or ".join(TOKENIZERS))


def chunk_mapper(params: dict[str, str]) -> WordCounter:
    return WordCounter(params["tokenizer"])


combine = reduce = sum_values
