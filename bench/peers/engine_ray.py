"""Word count on Ray (local, ``ray.init(num_cpus=N)``): tasks returning Counters.

    python engine_ray.py tasks|pymr FILE -o OUT [--workers 2] [--tokenizer words|whitespace]

* ``tasks`` (idiomatic): one ``@ray.remote`` task per 16 MiB block (pread by offset: the
  file is on this machine), decode + lower + findall + ``Counter`` (whitespace: ``Counter``
  of ``bytes.split()``, distinct tokens decoded once); the driver merges the Counters as they
  finish (``ray.wait``).
* ``pymr`` (pymr's per-byte algorithm inside): 2 x N tasks, each running one
  ``pymr.wordtokens.Combiner`` over its share of the blocks and returning one dict.
"""

from __future__ import annotations

import collections
import os
import sys

import common


def main(argv: list[str] | None = None) -> int:
    args = common.base_args(argv, ("tasks", "pymr"))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    common.mark("imported")
    ray.init(num_cpus=args.workers, logging_level="ERROR")
    common.mark("cluster")
    try:
        rngs = common.ranges(args.path)
        if args.variant == "tasks":
            @ray.remote
            def count_block(path: str, off: int, n: int, tokenizer: str) -> collections.Counter:
                import common as c
                return collections.Counter(c.count_bytes(c.read_range(path, off, n), tokenizer))

            refs = [count_block.remote(args.path, off, n, args.tokenizer) for off, n in rngs]
            total: collections.Counter[str] = collections.Counter()
            while refs:
                done, refs = ray.wait(refs, num_returns=1)
                total.update(ray.get(done[0]))
            counts = common.to_bytes_counts(total.items())
        else:
            @ray.remote
            def count_group(path: str, group: list, tokenizer: str) -> dict:
                import common as c
                return c.pymr_count_ranges(path, group, tokenizer)

            refs = [count_group.remote(args.path, g, args.tokenizer)
                    for g in common.groups(rngs, 2 * args.workers)]
            counts = {}
            while refs:
                done, refs = ray.wait(refs, num_returns=1)
                counts = common.merge_into(counts, ray.get(done[0]))
        common.mark("counted")
    finally:
        ray.shutdown()
    common.mark("cluster_closed")
    common.write(counts, args.output)
    common.report(engine="ray", variant=args.variant, tokenizer=args.tokenizer,
                  distinct=len(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
