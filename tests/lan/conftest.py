"""LAN tests run in network namespaces (root only). Without root they are skipped with the
reason; as root, a missing ``ip`` or a kernel without network namespaces skips them too,
except under CI, where it fails them naming what is missing (``helpers.missing_tool``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import helpers

from .lab import Lab, lab_unavailable

_MISSING = lab_unavailable()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/lan/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.lan)


@pytest.fixture(scope="session", autouse=True)
def _lab_available() -> None:
    """Skip (or, under CI as root, fail) every LAN test where no lab can be built."""
    if _MISSING:
        helpers.missing_tool(*_MISSING)


@pytest.fixture(scope="module")
def lab(_lab_available: None) -> Iterator[Lab]:
    """Bridge + one client host + three node hosts (one slot each), one cluster key.

    Every namespace is made inside the ``try``: a failure half-way still removes them.
    """
    lab = Lab()
    try:
        lab.create()
        client = lab.add_host("client")
        nodes = [lab.add_host(f"n{i}") for i in (1, 2, 3)]
        nodes[0].pymr("keygen", check=True)
        token = nodes[0].pymr("key", "export", check=True).stdout.strip()
        for h in [client, *nodes[1:]]:
            r = h.pymr("key", "import", token)
            assert r.returncode == 0, r.stderr
        for h in nodes:
            h.start_node("--slots", "1", wait=False)
        for h in nodes:
            h.wait_serving()
        lab.token = token
        yield lab
    finally:
        lab.destroy()
        assert not lab.leftovers(), "lab namespaces left behind"
