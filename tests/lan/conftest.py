"""LAN tests run in network namespaces (root only); skipped with the reason otherwise."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .lab import Lab, lab_unavailable

_REASON = lab_unavailable()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/lan/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.lan)
            if _REASON:
                item.add_marker(pytest.mark.skip(reason=_REASON))


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    """Bridge + one client host + three node hosts (one slot each), one cluster key."""
    lab = Lab().create()
    try:
        client = lab.add_host("client")
        nodes = [lab.add_host(f"n{i}") for i in (1, 2, 3)]
        r = nodes[0].pymr("keygen", check=True)
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
