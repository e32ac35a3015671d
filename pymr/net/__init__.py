"""The network: socket helpers, the cluster key with CURVE and ZAP, mDNS discovery,
the peer store, members, the discovery ladder, reachability and firewall checks,
and the observers that query nodes (``status``).

It may import the base modules, ``pymr.wire``, ``pymr.jobs`` and ``pymr.engine``;
never ``runtime``, the dashboard or the CLI.
"""
