"""``pymr doctor``: the members found, and the addresses that gave no usable answer."""

from __future__ import annotations

import platform
import time

from ..config import UNICODE_VERSION, split_endpoint
from ..net.discovery import BrowseResult
from ..net.ladder import LadderResult
from ..net.reach import DROPPED, OPEN, REFUSED, explain, tcp_reach
from ..wire.protocol import PROTOCOL_VERSION
from .diagnosis import FAIL, OK, WARN, Check, Diagnosis, MemberInfo

#: The fix for a node whose ports do not answer.
ALLOW = "allow tcp 7370-7373 there (nft insert rule inet filter input tcp dport 7370-7373 accept)"


def members(ladder: LadderResult, diag: Diagnosis) -> None:
    """Every member found, by rung, with its versions; each one's four ports from here."""
    for f in ladder.members:
        st, hello = f.status, f.status.hello
        if hello is None:
            continue
        rec = st.record
        diag.members.append(MemberInfo(
            name=st.name, node_id=st.node_id, endpoint=f.endpoint.removeprefix("tcp://"),
            found_by=f.how, pymr=hello.pymr_version,
            protocol=rec.protocol if rec is not None else PROTOCOL_VERSION,
            python=hello.python_version or (rec.python if rec else ""),
            unicode=hello.unicode_version, rtt_ms=st.rtt_ms, slots=hello.slots))
    if not ladder.members:
        diag.checks.append(Check("members", FAIL, f"no node found ({ladder.summary()})",
                                 "start 'pymr node' on the other machines; where multicast is "
                                 "blocked, 'pymr doctor --nodes HOST' with one member's "
                                 "address"))
        return
    # Every port of every member, from here: a job connects to task, control and events.
    ports: dict[str, list[tuple[str, tuple[str, int]]]] = {}
    for f in ladder.members:
        h = f.status.hello
        assert h is not None
        eps = {"task": h.task_endpoint, "shuffle": h.shuffle_endpoint, "control": f.endpoint,
               "events": h.events_endpoint}
        ports[f.status.name] = [(n, hp) for n, ep in eps.items()
                                if (hp := split_endpoint(ep)) is not None]
    states = tcp_reach([hp for items in ports.values() for _, hp in items])
    bad = 0
    for name, items in ports.items():
        wrong = [f"{what} port {hp[1]}: {explain(states.get(hp, DROPPED), hp[1])}"
                 for what, hp in items if states.get(hp) != OPEN]
        if wrong:
            bad += 1
            diag.checks.append(Check(f"member {name}", FAIL, f"{name} ({items[0][1][0]}): "
                                     + "; ".join(wrong), f"on {name}, {ALLOW}"))
    by_rung: dict[str, int] = {}
    for f in ladder.members:
        by_rung[f.how.split(" via ")[0]] = by_rung.get(f.how.split(" via ")[0], 0) + 1
    found = ", ".join(f"{label} {n}" for label, n in by_rung.items())
    versions = {(m.pymr, m.python, m.unicode) for m in diag.members}
    diag.checks.append(Check(
        "members", OK if not bad else WARN,
        f"{len(ladder.members)} found ({found}); "
        + ("every one answers the hello and on its four ports" if not bad
           else f"{len(ladder.members) - bad} answer on all four ports")
        + (f"; pymr {next(iter(versions))[0]}, Python {next(iter(versions))[1]}"
           if len(versions) == 1 else "")))


def not_answering(ladder: LadderResult, diag: Diagnosis, timeout_s: float) -> None:
    """Addresses dialled that gave no usable answer: why, from the TCP connect."""
    controls = {f.endpoint: split_endpoint(f.endpoint) for f in ladder.failed}
    states = tcp_reach([hp for hp in controls.values() if hp], timeout_s=min(timeout_s, 1.0))
    for f in ladder.failed:
        hp = controls.get(f.endpoint)
        st = f.status
        name = f.remembered.name if f.remembered else st.name
        where = f.endpoint.removeprefix("tcp://")
        if st.failure == "version":
            diag.checks.append(Check(f"node {name}", FAIL, f"{name} ({where}, {f.how}): "
                                     f"{st.error}", "install the same pymr and Python versions "
                                     f"everywhere (this machine: pymr {_pymr()}, Python "
                                     f"{platform.python_version()}, Unicode {UNICODE_VERSION})"))
            continue
        if st.failure == "key":
            why = "it refuses this cluster's key (a node of another cluster now)"
            fix = ("it is ignored; to make it a member: 'pymr key export' here, "
                   "'pymr key import TOKEN --force' there")
        else:
            state = states.get(hp, DROPPED) if hp else "a malformed address"
            why = explain(state, hp[1] if hp else 0) if hp else state
            fix = ("start 'pymr node' there (a stopped node's mDNS record lingers until its "
                   "TTL)" if state == REFUSED else f"on {name}, {ALLOW}; 'pymr doctor' there "
                   "names the rule" if state == DROPPED else "check the address and the route")
        if f.advertised:
            diag.checks.append(Check(f"node {name}", FAIL, f"{name} is advertised by mDNS "
                                     f"({where}) but does not answer: {why}", fix))
        elif f.origin == "seeds":
            diag.checks.append(Check(f"node {where}", FAIL, f"--nodes {where} does not answer: "
                                     f"{why}", fix))
        elif f.origin == "memory":
            m = f.remembered
            ago = _ago(time.time() - m.last_seen) if m else "?"
            diag.checks.append(Check(f"node {name}", WARN, f"remembered {name} ({where}, last "
                                     f"seen {ago} ago) does not answer: {why}",
                                     fix + "; if it left the cluster, it is forgotten after "
                                     "7 days"))
        else:
            diag.checks.append(Check(f"node {name}", WARN, f"{name} ({where}, {f.how}) does "
                                     f"not answer: {why}", fix))


def others(merged: BrowseResult, ladder: LadderResult | None, diag: Diagnosis) -> None:
    """Other clusters, records of other versions, ignored memory, copied identities."""
    other = sorted({i.fingerprint for i in merged.ignored if i.fingerprint
                    and "another cluster" in i.reason})
    if other:
        names = sorted({i.instance for i in merged.ignored if i.fingerprint in other})
        diag.checks.append(Check("other clusters", WARN, f"{len(names)} node(s) of other "
                                 f"cluster(s) are visible ({', '.join(names)}; key fingerprint "
                                 f"{', '.join(other)}); they are ignored",
                                 "to merge, import one cluster's key on the other's machines "
                                 "('pymr key export' there, 'pymr key import TOKEN --force' "
                                 "here)"))
    elif diag.fingerprint:
        diag.checks.append(Check("other clusters", OK, "no other pymr cluster is visible"))
    for i in merged.ignored:
        if i.fingerprint and "another cluster" in i.reason:
            continue
        diag.checks.append(Check(f"node {i.instance}", FAIL, f"{i.instance} is ignored: "
                                 f"{i.reason}", "install the same pymr and Python versions "
                                 "everywhere"))
    for what, why in (ladder.ignored if ladder else []):
        if what.startswith("remembered"):
            diag.checks.append(Check("memory", WARN, f"{what} is ignored: {why}"))
    copied = list(merged.copied_ids) + list(ladder.warnings if ladder else [])
    for c in copied:
        diag.checks.append(Check("identity", FAIL, f"node id {c} is used by two live nodes"
                                 if len(c) <= 32 else c,
                                 "delete 'node_id' in the pymr home of one of them and "
                                 "restart it"))


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


def _pymr() -> str:
    from .._version import __version__

    return __version__
