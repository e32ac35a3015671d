"""Word count with mrjob's local runner (Hadoop emulated with local subprocesses).

    python engine_mrjob.py words|pymr FILE -o OUT [--workers 2] [--runner local|inline]
                           [--tokenizer words|whitespace]

* ``words`` (idiomatic): ``mrjob_words.MRWords``, mapper = the word rule per line, combiner
  and reducer sum.
* ``pymr``: ``mrjob_pymr.MRPymrWords``, the mapper batches lines into
  ``pymr.wordtokens.Combiner`` and emits its dict once, in ``mapper_final``.

Small files only: the local runner sorts every intermediate record on disk.
"""

from __future__ import annotations

import argparse
import sys

import common


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("variant", choices=("words", "pymr"))
    ap.add_argument("path")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--runner", choices=("local", "inline"), default="local")
    ap.add_argument("--tokenizer", choices=common.TOKENIZERS, default="words")
    args = ap.parse_args(argv)
    if args.variant == "words":
        from mrjob_words import MRWords as Job
    else:
        from mrjob_pymr import MRPymrWords as Job
    common.mark("imported")
    job_args = ["-r", args.runner, "--no-conf", "--tokenizer", args.tokenizer, args.path]
    if args.runner == "local":
        job_args[2:2] = ["--num-cores", str(args.workers)]
    job = Job(job_args)
    with job.make_runner() as runner:
        common.mark("cluster")
        runner.run()
        counts = common.to_bytes_counts(job.parse_output(runner.cat_output()))
        common.mark("counted")
    common.mark("cluster_closed")
    common.write(counts, args.output)
    common.report(engine="mrjob", variant=args.variant, runner=args.runner,
                  tokenizer=args.tokenizer, distinct=len(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
