"""mrjob job, idiomatic: the tokenizer per line, combiner and reducer sum (see engine_mrjob.py).

``--tokenizer words`` (default): the word rule; ``whitespace``: ``line.split()`` on the raw
bytes (ASCII whitespace), each token decoded UTF-8 with replacement.
"""

import re

from mrjob.job import MRJob
from mrjob.protocol import BytesValueProtocol

WORD_RE = re.compile(r"\w+(?:['’]\w+)*")


class MRWords(MRJob):
    INPUT_PROTOCOL = BytesValueProtocol      # raw line bytes: we decode with "replace"

    def configure_args(self):
        super().configure_args()
        self.add_passthru_arg("--tokenizer", choices=("words", "whitespace"), default="words")

    def mapper(self, _, line):
        if self.options.tokenizer == "words":
            for word in WORD_RE.findall(line.decode("utf-8", "replace").lower()):
                yield word, 1
        else:
            for token in line.split():
                yield token.decode("utf-8", "replace"), 1

    def combiner(self, word, counts):
        yield word, sum(counts)

    def reducer(self, word, counts):
        yield word, sum(counts)


if __name__ == "__main__":
    MRWords.run()
