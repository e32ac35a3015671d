"""The ``pymr`` command: ``main`` parses the command line and runs ``pymr job``; the
other modules hold the cluster, discovery, dashboard and doctor commands.

It is the top layer: it may import anything in pymr, and nothing below imports it
(``python -m pymr`` and the console script enter through ``pymr.cli.main``).
"""
