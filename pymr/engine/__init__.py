"""The data path without sockets: cutting inputs into splits, the map and reduce
sides, the scheduler, liveness, the acked control channel, the exactly-once ledger, a
node's job table, sorted runs, retained outputs, part files and the output writers.

Most of it is sans-I/O and tested with explicit events. It may import the base
modules, ``pymr.wire`` and ``pymr.jobs``; never ``net``, ``runtime`` or the CLI.
"""
