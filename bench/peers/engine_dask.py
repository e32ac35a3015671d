"""Word count on Dask distributed: ``LocalCluster`` with N single-threaded worker processes.

    python engine_dask.py bag|fast|pymr FILE -o OUT [--workers 2] [--tokenizer words|whitespace]

* ``bag``  (idiomatic): ``read_text(...).map(str.lower).map(findall).flatten().frequencies()``;
  whitespace: ``read_text(...).map(common.tokens_of_text).flatten().frequencies()``.
* ``fast`` (the fastest plain-rule variant found): ``dask.bytes.read_bytes`` 16 MiB blocks cut
  at newlines, one delayed task per block doing decode + lower + findall + ``Counter``
  (no per-line objects), the per-block dicts merged in the driver; whitespace: ``Counter``
  of ``bytes.split()``, each distinct token decoded once (``common.count_bytes``).
  Results travel as one pickled blob per task: a plain dict result is serialised by
  Dask's msgpack path, which costs several times the counting itself on ~100k-key dicts
  (measured: 35-50 s of CPU instead of ~9 s at 100 MiB).
* ``pymr`` (pymr's per-byte algorithm inside): 2 x workers futures, each running
  ``pymr.wordtokens.Combiner`` over its share of the 16 MiB blocks (pread by offset) and
  returning one dict; merged in the driver.
"""

from __future__ import annotations

import pickle
import sys

import common


def count_block(data: bytes, tokenizer: str) -> bytes:
    return pickle.dumps(common.count_bytes(data, tokenizer), protocol=5)


def pymr_block_group(path: str, group: list, tokenizer: str) -> bytes:
    return pickle.dumps(common.pymr_count_ranges(path, group, tokenizer), protocol=5)


def main(argv: list[str] | None = None) -> int:
    args = common.base_args(argv, ("bag", "fast", "pymr"))
    import dask
    import dask.bag as db
    from distributed import Client, LocalCluster
    common.mark("imported")
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True) as cluster, \
            Client(cluster) as client:
        common.mark("cluster")
        if args.variant == "bag":
            bag = db.read_text(args.path, blocksize=common.BLOCK, encoding="utf-8",
                               errors="replace")
            if args.tokenizer == "words":
                tokens = bag.map(str.lower).map(common.WORD_RE.findall)
            else:
                tokens = bag.map(common.tokens_of_text)
            pairs = tokens.flatten().frequencies().compute()
            counts = common.to_bytes_counts(pairs)
        elif args.variant == "fast":
            from dask.bytes import read_bytes
            _, blocks = read_bytes(args.path, delimiter=b"\n", blocksize=common.BLOCK)
            parts = dask.compute(*[dask.delayed(count_block)(b, args.tokenizer) for b in blocks[0]])
            total: dict[str, int] = {}
            for part in sorted((pickle.loads(x) for x in parts), key=len, reverse=True):
                total = common.merge_into(total, part)
            counts = common.to_bytes_counts(total.items())
        else:
            rngs = common.ranges(args.path)
            futs = [client.submit(pymr_block_group, args.path, g, args.tokenizer, pure=False)
                    for g in common.groups(rngs, 2 * args.workers)]
            counts = {}
            for blob in client.gather(futs):
                counts = common.merge_into(counts, pickle.loads(blob))
        common.mark("counted")
    common.mark("cluster_closed")
    common.write(counts, args.output)
    common.report(engine="dask", variant=args.variant, tokenizer=args.tokenizer,
                  distinct=len(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
