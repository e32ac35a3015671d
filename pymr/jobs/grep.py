"""Lines that match a regular expression, with their file and line number, in order.

-p pattern=REGEX (required; Python's re syntax, searched anywhere in the line);
-p ignore_case=yes for a case-insensitive match. The key is (file, line number), so the
output is in file-name order, then line order: 'pymr job grep -p pattern=ERROR logs/'.
"""

import re

from pymr.api import count

PARAMS = {"pattern": None, "ignore_case": "no"}
FIELDS = ("where", "line")

_search = re.compile("").search  # setup() compiles the pattern


def setup(params):
    global _search
    flags = re.IGNORECASE if params["ignore_case"].lower() in ("yes", "true", "1") else 0
    try:
        _search = re.compile(params["pattern"], flags).search
    except re.error as exc:
        raise ValueError(f"-p pattern={params['pattern']!r} is not a regular expression: "
                         f"{exc}") from None


def map(line, pos):
    if _search(line):
        count("matching lines")
        yield (pos.file, pos.line), line


def reduce(key, values):
    return values[0]  # a (file, line) key is emitted once
