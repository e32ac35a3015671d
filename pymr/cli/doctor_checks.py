"""``pymr doctor``: what works on the way to the cluster, what does not, and the fix.

Each check has a verdict (ok, warn, fail, info) and, when something is wrong, the fix in
one line: the interfaces chosen and skipped; the cluster key; multicast on each chosen
interface (does an mDNS question get this machine's own answer, another node's, or none
while members answer by unicast: then the network drops multicast); this machine's node
ports; local firewall rules on mDNS and the node ports; every member found, by which
rung, with its versions and round trip; members that are advertised or named but do not
answer, and why (refused, dropped, another cluster's key, other versions); other
clusters and copied identities. ``Diagnosis.ok`` is true when nothing fails: a job would
run on every node found, by the first rung.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ifaddr  # a dependency of zeroconf

from ..config import DEFAULT_BASE_PORT, DEFAULT_DISCOVER_S, split_endpoint
from ..errors import PymrError
from ..net.discovery import Browser, BrowseResult, NodeRecord, select_addresses, usable_by_default
from ..net.firewall import check_local, pymr_packets
from ..net.ladder import LadderOptions, LadderResult, climb
from ..net.peerstore import PeerStore
from ..net.reach import OPEN, tcp_reach
from ..net.security import ClusterKey
from ..net.status import probe
from ..runtime.state import StateDir
from .diagnosis import FAIL, INFO, OK, WARN, Check, Diagnosis
from .doctor_members import members, not_answering, others

log = logging.getLogger(__name__)

#: Interface names of VPNs and tunnels: mDNS rarely crosses them.
_VPN_IFACE = re.compile(r"^(tun|tap|wg|utun|ppp|tailscale|zt|nordlynx|proton|ipsec|gpd)")



@dataclass(frozen=True)
class DoctorOptions:
    interface_spec: str | None = None
    seeds: list[str] = field(default_factory=list)
    window_s: float = DEFAULT_DISCOVER_S
    timeout_s: float = 1.5


def diagnose(state: StateDir, opts: DoctorOptions,
             progress: Callable[[str], None] = lambda text: None) -> Diagnosis:
    """Run every check (a few seconds: one mDNS window, then hellos and connects)."""
    started = time.monotonic()
    diag = Diagnosis()
    progress("interfaces")
    chosen = _interfaces(opts.interface_spec, diag)
    key = _key(state, diag)
    own_id = _own_node_id(state)
    local_pid = _local_node_pid(state)
    progress(f"listening for mDNS answers on {', '.join(ip for _, ip, _ in chosen) or '-'}")
    heard = _browse_each([ip for _, ip, _ in chosen], opts.window_s,
                         key.fingerprint if key else None)
    merged = _merge(list(heard.values()))
    ladder: LadderResult | None = None
    if key is not None:
        diag.fingerprint = key.fingerprint
        progress("dialling members (remembered, named by peers, --nodes)")
        ladder = climb(key, LadderOptions(interfaces=None, seeds=list(opts.seeds),
                                          use_memory=True, probe_timeout_s=opts.timeout_s,
                                          dial_timeout_s=opts.timeout_s),
                       PeerStore(state.home), heard=merged)
        diag.discovery = ladder.summary(timed=False)   # browsing was done above
    local = _local_node(key, own_id, local_pid, chosen, ladder, opts.timeout_s)
    progress("checking ports and firewall rules")
    _multicast(chosen, heard, own_id, local_pid, ladder, diag)
    _local_ports(local, local_pid, diag)
    _firewall(local, chosen, local_pid, diag)
    if ladder is not None:
        members(ladder, diag)
        not_answering(ladder, diag, opts.timeout_s)
    others(merged, ladder, diag)
    diag.elapsed_s = time.monotonic() - started
    return diag


# ---------------------------------------------------------------- interfaces and key


def _networks() -> list[tuple[str, str, int]]:
    """Every (interface name, IPv4 address, prefix length) of this host."""
    out = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                out.append((adapter.nice_name, ip.ip, ip.network_prefix))
    return out


def _interfaces(spec: str | None, diag: Diagnosis) -> list[tuple[str, str, int]]:
    known = _networks()
    try:
        chosen_ips = select_addresses(spec)
    except PymrError as exc:
        diag.checks.append(Check("interfaces", FAIL, str(exc),
                                 "connect to the LAN, or pass --interface ADDR"))
        return []
    chosen = [n for n in known if n[1] in chosen_ips]
    skipped = []
    for name, ip, _ in known:
        if ip in chosen_ips:
            continue
        addr = ipaddress.ip_address(ip)
        why = ("not named by --interface" if spec else "loopback" if addr.is_loopback
               else "link-local" if addr.is_link_local
               else "container or VM bridge" if not usable_by_default(name, ip) else "?")
        skipped.append(f"{name} {ip} ({why})")
    detail = "chosen: " + ", ".join(f"{n} {ip}/{pre}" for n, ip, pre in chosen)
    if skipped:
        detail += "; skipped: " + ", ".join(skipped)
    vpn = [n for n, _, _ in chosen if _VPN_IFACE.match(n)]
    if vpn:
        diag.checks.append(Check("interfaces", WARN, detail + f"; {', '.join(vpn)} looks like "
                                 "a VPN or tunnel: mDNS rarely crosses one",
                                 "pass --interface with the LAN interface (pymr node, job, "
                                 "status and doctor all take it)"))
    elif len(chosen) > 1:
        diag.checks.append(Check("interfaces", WARN, detail + f"; a node serves on the first "
                                 f"({chosen[0][1]}) only",
                                 "pass --interface NAME to choose the LAN interface"))
    else:
        diag.checks.append(Check("interfaces", OK, detail))
    return chosen


def _key(state: StateDir, diag: Diagnosis) -> ClusterKey | None:
    path = state.key_file
    if not path.exists():
        diag.checks.append(Check("cluster key", FAIL, f"no cluster key at {path}: this machine "
                                 "is not a member of any cluster",
                                 "run 'pymr key export' on a member and 'pymr key import TOKEN' "
                                 "here (or 'pymr keygen' to found a new cluster)"))
        return None
    try:
        key = state.load_key()
    except PymrError as exc:
        diag.checks.append(Check("cluster key", FAIL, str(exc),
                                 f"chmod 600 {path}" if "readable" in str(exc)
                                 else "import the key again: 'pymr key import TOKEN --force'"))
        return None
    mode = path.stat().st_mode & 0o777
    diag.checks.append(Check("cluster key", OK, f"{path}: mode {mode:04o}, fingerprint "
                             f"{key.fingerprint}"))
    return key


def _own_node_id(state: StateDir) -> str:
    try:
        return state.node_id_file.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""


def _local_node_pid(state: StateDir) -> int | None:
    """The pid of a ``pymr node`` running from this home, if any (its lock file)."""
    try:
        pid = int((state.home / "node.lock").read_text(encoding="ascii").strip() or 0)
        cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
    except (OSError, ValueError):
        return None
    return pid if pid and b"pymr" in cmdline and b"node" in cmdline else None


# ---------------------------------------------------------------- multicast


def _browse_each(ips: list[str], window_s: float,
                 fingerprint: str | None) -> dict[str, BrowseResult]:
    """One browser per interface, all at once, so answers can be told apart by interface."""
    browsers: dict[str, Browser] = {}
    try:
        for ip in ips:
            try:
                browsers[ip] = Browser([ip]).start()
            except OSError as exc:
                log.warning("cannot browse on %s: %s", ip, exc)
        deadline = time.monotonic() + window_s
        while time.monotonic() < deadline:
            for b in browsers.values():
                b.poll(min(0.05, max(0.0, deadline - time.monotonic())))
        return {ip: b.result(fingerprint) for ip, b in browsers.items()}
    finally:
        for b in browsers.values():
            b.close()


def _merge(results: list[BrowseResult]) -> BrowseResult:
    out = BrowseResult()
    nodes: dict[str, NodeRecord] = {}
    ignored: dict[str, Any] = {}
    for r in results:
        for n in r.nodes:
            nodes.setdefault(n.instance, n)
        for i in r.ignored:
            ignored.setdefault(i.instance, i)
        out.copied_ids = sorted(set(out.copied_ids) | set(r.copied_ids))
        out.interfaces += r.interfaces
        out.elapsed_s = max(out.elapsed_s, r.elapsed_s)
        out.seen_after_s.update(r.seen_after_s)
    out.nodes = sorted(nodes.values(), key=lambda r: (r.name, r.node_id))
    out.ignored = list(ignored.values())
    return out


def _host(endpoint: str) -> str:
    hp = split_endpoint(endpoint)
    return hp[0] if hp else ""


def _multicast(chosen: list[tuple[str, str, int]], heard: dict[str, BrowseResult],
               own_id: str, local_pid: int | None, ladder: LadderResult | None,
               diag: Diagnosis) -> None:
    members = [f for f in (ladder.members if ladder else []) if f.status.node_id != own_id]
    for name, ip, prefix in chosen:
        res = heard.get(ip)
        if res is None:
            diag.checks.append(Check(f"multicast {name}", FAIL, f"cannot listen for mDNS on "
                                     f"{ip}", "is another program holding UDP 5353 "
                                     "exclusively? (pymr shares it with avahi)"))
            continue
        records = [(r.name, r.node_id, r.addresses) for r in res.nodes] + \
            [(i.instance, "", ()) for i in res.ignored if i.fingerprint]
        own = any(nid == own_id and own_id for _, nid, _ in records)
        others = [n for n, nid, _ in records if not (own_id and nid == own_id)]
        net = ipaddress.ip_network(f"{ip}/{prefix}", strict=False)
        unicast = [f for f in members if _in_net(_host(f.endpoint), net)]
        topic = f"multicast {name}"
        if others:
            diag.checks.append(Check(topic, OK, f"mDNS works on {name} {ip}: "
                                     f"{len(others)} other node(s) answered "
                                     f"({', '.join(sorted(set(others)))})"))
        elif unicast:
            diag.checks.append(Check(
                topic, FAIL, f"multicast is blocked on {name} {ip}: no mDNS answer, yet "
                f"{len(unicast)} member(s) on {net} answer by unicast "
                f"({', '.join(sorted({f.status.name for f in unicast}))})",
                "let UDP 5353 to 224.0.0.251 through (on the Wi-Fi access point: turn off "
                "client/AP isolation, allow multicast); meanwhile 'pymr job' finds them "
                "from memory, or pass --nodes HOST / 'pymr node --join HOST'"))
        elif local_pid is not None and not own:
            diag.checks.append(Check(
                topic, FAIL, f"not even this machine's node answered mDNS on {name} {ip}: "
                "this machine drops multicast or UDP 5353",
                "see the firewall check; allow udp 5353 in and out"))
        elif own:
            diag.checks.append(Check(
                topic, WARN, f"only this machine's node answered mDNS on {name} {ip}: no other "
                "node on this network, or the network drops multicast",
                "start 'pymr node' on another machine; 'pymr doctor --nodes HOST' with a "
                "member's address tells the two apart"))
        else:
            diag.checks.append(Check(
                topic, WARN, f"no mDNS answer on {name} {ip}: no node on this network, or "
                "the network drops multicast",
                "start 'pymr node' on the other machines; 'pymr doctor --nodes HOST' with a "
                "member's address tells the two apart"))


def _in_net(host: str, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    try:
        return ipaddress.ip_address(host) in net
    except ValueError:
        return False


# ---------------------------------------------------------------- this machine's node


@dataclass
class _Local:
    name: str = ""
    endpoints: dict[str, str] = field(default_factory=dict)   # port name -> endpoint


def _local_node(key: ClusterKey | None, own_id: str, pid: int | None,
                chosen: list[tuple[str, str, int]], ladder: LadderResult | None,
                timeout_s: float) -> _Local | None:
    """This machine's running node and its four endpoints, if it answers."""
    if pid is None or key is None:
        return None
    hello = next((f.status.hello for f in (ladder.members if ladder else [])
                  if f.status.node_id == own_id and f.status.hello is not None), None)
    control = next((f.endpoint for f in (ladder.members if ladder else [])
                    if f.status.node_id == own_id), "")
    if hello is None:
        sts = probe([(f"tcp://{ip}:{DEFAULT_BASE_PORT + 2}", None) for _, ip, _ in chosen],
                    key, timeout_s=timeout_s, want_status=False, fail_fast=True)
        st = next((s for s in sts if s.hello is not None and s.node_id == own_id), None)
        if st is None:
            return _Local()
        hello, control = st.hello, st.endpoint
    assert hello is not None
    return _Local(hello.name, {"task": hello.task_endpoint, "shuffle": hello.shuffle_endpoint,
                               "control": control, "events": hello.events_endpoint})


def _local_ports(local: _Local | None, pid: int | None, diag: Diagnosis) -> None:
    if pid is None:
        diag.checks.append(Check("node ports", INFO, "no 'pymr node' runs from this pymr home "
                                 "(this machine is a client)"))
        return
    if local is None or not local.endpoints:
        diag.checks.append(Check("node ports", WARN, f"'pymr node' runs here (pid {pid}) but "
                                 f"does not answer on port {DEFAULT_BASE_PORT + 2} of the "
                                 "chosen interfaces (other ports, or another interface?)",
                                 "see the node's first output line for its control port"))
        return
    targets = {name: split_endpoint(ep) for name, ep in local.endpoints.items()}
    states = tcp_reach([hp for hp in targets.values() if hp])
    bad = [f"{name} {hp[1]}: {states.get(hp)}" for name, hp in targets.items()
           if hp and states.get(hp) != OPEN]
    where = ", ".join(f"{name} {hp[1]}" for name, hp in targets.items() if hp)
    host = next((hp[0] for hp in targets.values() if hp), "?")
    if bad:
        diag.checks.append(Check("node ports", FAIL, f"this machine's node {local.name} on "
                                 f"{host}: " + "; ".join(bad),
                                 "restart 'pymr node'; see the firewall check"))
    else:
        diag.checks.append(Check("node ports", OK, f"this machine's node {local.name} listens "
                                 f"on {host} ({where}); all connect from here (other "
                                 "machines: see the firewall check, or run 'pymr doctor' "
                                 "there)"))


def _firewall(local: _Local | None, chosen: list[tuple[str, str, int]], pid: int | None,
              diag: Diagnosis) -> None:
    ports = sorted({hp[1] for hp in (split_endpoint(ep) for ep in
                                     (local.endpoints.values() if local else [])) if hp}) \
        or list(range(DEFAULT_BASE_PORT, DEFAULT_BASE_PORT + 4))
    address = chosen[0][1] if chosen else "0.0.0.0"
    report = check_local(pymr_packets(ports, address, serving=pid is not None))
    if not report.readable:
        diag.checks.append(Check("firewall", INFO, f"cannot read this machine's firewall rules "
                                 f"({report.why_not})",
                                 "run 'sudo pymr doctor' to check them" if os.geteuid() != 0
                                 else ""))
        return
    tools = " and ".join(report.tools)
    if not report.findings:
        diag.checks.append(Check("firewall", OK, f"{tools}: no rule drops mDNS or the node "
                                 f"ports ({', '.join(map(str, ports))})"))
        return
    grouped: dict[tuple[str, bool], list[str]] = {}
    fixes: dict[tuple[str, bool], str] = {}
    for f in report.findings:
        k = (f.rule, f.certain)
        grouped.setdefault(k, []).append(f.packet.what)
        fixes[k] = f.fix
    for (rule, certain), whats in grouped.items():
        diag.checks.append(Check("firewall", FAIL if certain else WARN,
                                 f"{'drops' if certain else 'may drop'} "
                                 f"{'; '.join(dict.fromkeys(whats))}: {rule}",
                                 fixes[(rule, certain)]))
