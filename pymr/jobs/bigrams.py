"""Pairs of consecutive words in a line, with how often each occurs, most frequent first.

Words follow word count's rule (lower-cased runs of letters, digits and '_', inner
apostrophes kept); a pair never spans two lines. Key: "first second".
"""

import re

from pymr.api import sum_values

ORDER = "value"
FIELDS = ("bigram", "count")

_words = re.compile(r"\w+(?:['’]\w+)*").findall


def map(line):
    words = _words(line.lower())
    for first, second in zip(words, words[1:], strict=False):
        yield first + " " + second, 1


combine = reduce = sum_values
