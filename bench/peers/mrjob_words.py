"""mrjob job, idiomatic: the word rule per line, combiner and reducer sum (see engine_mrjob.py)."""

import re

from mrjob.job import MRJob
from mrjob.protocol import BytesValueProtocol

WORD_RE = re.compile(r"\w+(?:['’]\w+)*")


class MRWords(MRJob):
    INPUT_PROTOCOL = BytesValueProtocol      # raw line bytes: we decode with "replace"

    def mapper(self, _, line):
        for word in WORD_RE.findall(line.decode("utf-8", "replace").lower()):
            yield word, 1

    def combiner(self, word, counts):
        yield word, sum(counts)

    def reducer(self, word, counts):
        yield word, sum(counts)


if __name__ == "__main__":
    MRWords.run()
