"""mrjob job with pymr's per-byte algorithm: lines batched into one Combiner per mapper."""

import os
import sys

sys.path[:0] = [p for p in os.environ.get("PEERS_PATH", "").split(os.pathsep) if p]

from mrjob.job import MRJob  # noqa: E402
from mrjob.protocol import BytesValueProtocol  # noqa: E402

BATCH_BYTES = 1 << 20


class MRPymrWords(MRJob):
    INPUT_PROTOCOL = BytesValueProtocol

    def configure_args(self):
        super().configure_args()
        self.add_passthru_arg("--tokenizer", choices=("words", "whitespace"), default="words")

    def mapper_init(self):
        from pymr.wordtokens import Combiner
        self.comb = Combiner(self.options.tokenizer)
        self.buf = []
        self.size = 0

    def mapper(self, _, line):
        self.buf.append(line)
        self.size += len(line) + 1
        if self.size >= BATCH_BYTES:
            self._add()
        return iter(())

    def _add(self):
        if self.buf:
            self.comb.add(b"\n".join(self.buf) + b"\n")
            self.buf, self.size = [], 0

    def mapper_final(self):
        self._add()
        words, _bad = self.comb.finish()
        for w, n in words.items():
            yield w.decode("utf-8"), n

    def combiner(self, word, counts):
        yield word, sum(counts)

    def reducer(self, word, counts):
        yield word, sum(counts)


if __name__ == "__main__":
    MRPymrWords.run()
