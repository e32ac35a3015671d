"""pymr's processes: the master, the node daemon, its executors and their supervisor,
the embedded cluster, ``pymr.run`` (``runner``) and the pymr home (``state``).

It may import every lower layer (base, ``wire``, ``jobs``, ``engine``, ``net``);
never the dashboard or the CLI.
"""
