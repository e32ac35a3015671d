"""An inverted index: each word with the sorted list of file:line where it occurs.

Words follow word count's rule (lower-cased runs of letters, digits and '_', inner
apostrophes kept); a word that occurs twice in a line is listed once for that line.
"""

import re

FIELDS = ("word", "occurrences")

_words = re.compile(r"\w+(?:['’]\w+)*").findall


def map(line, pos):
    where = f"{pos.file}:{pos.line}"
    for word in set(_words(line.lower())):
        yield word, where


def _file_and_line(where):
    file, _, line = where.rpartition(":")
    return file, int(line)


def reduce(word, places):
    return sorted(places, key=_file_and_line)
