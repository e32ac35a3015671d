"""Word count on PySpark in local mode (``local[N]``): RDD, DataFrame, pymr's algorithm.

    python engine_spark.py rdd|df|pymr FILE -o OUT [--workers 2] [--tokenizer words|whitespace]

* ``rdd``  (idiomatic): ``textFile`` -> ``flatMap(findall(line.lower()))`` -> ``map((w, 1))``
  -> ``reduceByKey(add)`` -> ``collect``; Python workers run the word rule.
* ``df``   (idiomatic DataFrame, all in the JVM): ``spark.read.text`` ->
  ``explode(regexp_extract_all(lower(value), RULE))`` -> ``groupBy(word).count()`` ->
  ``collect``.  RULE is the word rule in Java regex syntax (``common.JAVA_WORD_PATTERN``):
  Java's ``\\w`` differs from Python's, so the class is spelled out; lowering is Java's
  ``toLowerCase``.  The checker proves (or refutes) that this gives pymr's answer.
  Whitespace: ``explode(split(value, "[ \\t\\n\\r\\x0B\\f]+"))`` without the empty
  strings (the RDD: ``common.tokens_of_text`` per line).
* ``pymr`` (pymr's per-byte algorithm inside): ``parallelize`` the 16 MiB block ranges into
  2 x N slices, ``mapPartitions`` runs one ``pymr.wordtokens.Combiner`` per slice (pread by
  offset) and yields its dict once; the dicts are merged in the driver.

Spark runs with its defaults otherwise (UI on, driver memory 1g) unless SPARK_CONF_EXTRA
(``key=value,key=value``) says more.
"""

from __future__ import annotations

import os
import sys

import common


def main(argv: list[str] | None = None) -> int:
    args = common.base_args(argv, ("rdd", "df", "pymr"))
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F
    common.mark("imported")
    builder = (SparkSession.builder.master(f"local[{args.workers}]")
               .appName(f"pymr-peers-{args.variant}"))
    for kv in filter(None, os.environ.get("SPARK_CONF_EXTRA", "").split(",")):
        k, v = kv.split("=", 1)
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    sc = spark.sparkContext
    common.mark("cluster")
    try:
        if args.variant == "rdd":
            tokens = common.text_tokenizer(args.tokenizer)
            pairs = (sc.textFile(args.path)
                     .flatMap(tokens)
                     .map(lambda w: (w, 1))
                     .reduceByKey(lambda a, b: a + b)
                     .collect())
            counts = common.to_bytes_counts(pairs)
        elif args.variant == "df":
            lines = spark.read.text(args.path)
            if args.tokenizer == "words":
                words = lines.select(F.explode(F.regexp_extract_all(
                    F.lower(F.col("value")), F.lit(common.JAVA_WORD_PATTERN), F.lit(0)))
                    .alias("word"))
            else:
                words = (lines.select(F.explode(F.split(F.col("value"),
                                                        common.JAVA_WS_PATTERN)).alias("word"))
                         .where(F.col("word") != ""))
            rows = words.groupBy("word").count().collect()
            counts = common.to_bytes_counts((r[0], r[1]) for r in rows)
        else:
            rngs = common.ranges(args.path)
            path, tokenizer = args.path, args.tokenizer

            def part(it):
                import common as c
                rs = [tuple(x) for x in it]
                if rs:
                    yield c.pymr_count_ranges(path, rs, tokenizer)

            slices = common.groups(rngs, 2 * args.workers)
            flat = [r for g in slices for r in g]   # contiguous slices of the dealt groups
            dicts = (sc.parallelize(flat, len(slices)).mapPartitions(part).collect())
            counts = {}
            for d in sorted(dicts, key=len, reverse=True):
                counts = common.merge_into(counts, d)
        common.mark("counted")
    finally:
        spark.stop()
    common.mark("cluster_closed")
    common.write(counts, args.output)
    common.report(engine="spark", variant=args.variant, tokenizer=args.tokenizer,
                  distinct=len(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
