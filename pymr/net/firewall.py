"""Do this machine's firewall rules drop mDNS or the node ports? (nftables, iptables)

``pymr doctor`` reads the rules when it may (``nft -j list ruleset``, ``iptables-save``:
both need root) and walks them for the packets pymr sends and receives: mDNS questions
and answers (UDP 5353 to 224.0.0.251), connections to a node's ports. Each base chain of
the packet's hook is walked in order, following jumps, as the kernel would for a new
connection; a match this walk cannot judge (a source address, an interface, a random
number) makes the rule's drop a "maybe". The parsers are pure functions of the rule text.
"""

from __future__ import annotations

import ipaddress
import json
import shlex
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

MDNS_PORT = 5353
MDNS_GROUP = "224.0.0.251"
_YES, _NO, _MAYBE = "yes", "no", "maybe"
_MAX_DEPTH = 16


@dataclass(frozen=True, slots=True)
class Packet:
    """The traffic a check is about (IPv4, a new connection or datagram)."""

    what: str            # "mDNS answers (udp 5353 in)"
    hook: str            # "input" | "output"
    proto: str           # "udp" | "tcp"
    dport: int
    daddr: str
    pkttype: str = "host"    # "multicast" for the mDNS group


@dataclass(frozen=True, slots=True)
class Finding:
    """A rule that drops (or may drop) a packet."""

    packet: Packet
    certain: bool        # False: the rule matches only some such packets
    rule: str            # where, and the rule as text
    fix: str


@dataclass
class FirewallReport:
    readable: bool = False
    tools: list[str] = field(default_factory=list)     # what was read: nft, iptables
    why_not: str = ""                                  # why the rules could not be read
    findings: list[Finding] = field(default_factory=list)


def pymr_packets(node_ports: Iterable[int], local_address: str = "0.0.0.0",
                 serving: bool = False) -> list[Packet]:
    """mDNS both ways; connections to nodes' ports (out), and to ours when we serve (in)."""
    ports = sorted(set(node_ports))
    out = [Packet("mDNS answers and questions from others (udp 5353 in)", "input", "udp",
                  MDNS_PORT, MDNS_GROUP, "multicast"),
           Packet("mDNS questions and answers of this machine (udp 5353 out)", "output", "udp",
                  MDNS_PORT, MDNS_GROUP, "multicast")]
    out += [Packet(f"connections to nodes' port {p} (tcp out)", "output", "tcp", p,
                   "192.0.2.1") for p in ports]
    if serving:
        out += [Packet(f"connections to this node's port {p} (tcp in)", "input", "tcp", p,
                       local_address) for p in ports]
    return out


def check_local(packets: list[Packet]) -> FirewallReport:
    """Read this machine's rules (nft, then iptables-save) and walk them for ``packets``."""
    report = FirewallReport()
    reasons = []
    if shutil.which("nft"):
        text, err = _run(["nft", "-j", "list", "ruleset"])
        if text is not None:
            try:
                doc = json.loads(text)
            except ValueError:
                doc = None
            if isinstance(doc, dict):
                report.readable = True
                report.tools.append("nftables")
                report.findings += scan_nft(doc, packets)
        else:
            reasons.append(f"nft: {err}")
    if shutil.which("iptables-save"):
        text, err = _run(["iptables-save"])
        if text is not None:
            report.readable = True
            report.tools.append("iptables")
            report.findings += scan_iptables(text, packets)
        else:
            reasons.append(f"iptables-save: {err}")
    if not report.readable:
        report.why_not = "; ".join(reasons) or "neither nft nor iptables-save is installed"
    return report


def _run(argv: list[str]) -> tuple[str | None, str]:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, str(exc)
    if r.returncode != 0:
        return None, (r.stderr.strip().splitlines() or ["failed"])[-1]
    return r.stdout, ""


# ---------------------------------------------------------------- values


def _in_values(value: Any, right: Any) -> bool:
    """Is ``value`` (int, str) one of the values ``right`` denotes (nft JSON or ours)?"""
    if isinstance(right, dict):
        if "set" in right:
            return any(_in_values(value, x) for x in right["set"])
        if "range" in right:
            lo, hi = right["range"]
            return _cmp(value, lo) >= 0 and _cmp(value, hi) <= 0
        if "prefix" in right:
            try:
                net = ipaddress.ip_network(f"{right['prefix']['addr']}/{right['prefix']['len']}",
                                           strict=False)
                return ipaddress.ip_address(str(value)) in net
            except ValueError:
                return False
        return False
    if isinstance(right, list):
        return any(_in_values(value, x) for x in right)
    if isinstance(value, str) and isinstance(right, str) and "/" in right:
        try:
            return ipaddress.ip_address(value) in ipaddress.ip_network(right, strict=False)
        except ValueError:
            return False
    return value == right or str(value) == str(right)


def _cmp(a: Any, b: Any) -> int:
    try:
        x, y = int(a), int(b)
    except (TypeError, ValueError):
        try:
            x, y = int(ipaddress.ip_address(str(a))), int(ipaddress.ip_address(str(b)))
        except ValueError:
            return 0 if a == b else -1
    return (x > y) - (x < y)


# ---------------------------------------------------------------- nftables


def _nft_value(left: Any, pkt: Packet) -> tuple[str, Any]:
    """(state, value) of a match's left side for ``pkt``: state "no" when the match does
    not apply to it (``tcp dport`` of a UDP packet), "maybe" when it cannot be judged."""
    if not isinstance(left, dict):
        return _MAYBE, None
    if "payload" in left:
        proto, fld = left["payload"].get("protocol"), left["payload"].get("field")
        if proto in ("tcp", "udp", "th"):
            if proto != "th" and proto != pkt.proto:
                return _NO, None
            return (_YES, pkt.dport) if fld == "dport" else (_MAYBE, None)
        if proto == "ip":
            if fld == "daddr":
                return _YES, pkt.daddr
            if fld == "protocol":
                return _YES, pkt.proto
            return _MAYBE, None
        if proto == "ip6":
            return _NO, None
        return _MAYBE, None
    if "meta" in left:
        key = left["meta"].get("key")
        if key == "l4proto":
            return _YES, pkt.proto
        if key == "nfproto":
            return _YES, "ipv4"
        if key == "pkttype":
            return _YES, pkt.pkttype
        return _MAYBE, None
    if "ct" in left and left["ct"].get("key") == "state":
        return _YES, "new"
    return _MAYBE, None


def _nft_match(m: dict[str, Any], pkt: Packet) -> str:
    state, value = _nft_value(m.get("left"), pkt)
    if state != _YES:
        return state
    op, right = m.get("op", "=="), m.get("right")
    if op in ("==", "in"):
        hit = _in_values(value, right)
    elif op == "!=":
        hit = not _in_values(value, right)
    elif op in ("<", ">", "<=", ">="):
        c = _cmp(value, right)
        hit = {"<": c < 0, ">": c > 0, "<=": c <= 0, ">=": c >= 0}[op]
    else:
        return _MAYBE
    return _YES if hit else _NO


_NFT_VERDICTS = ("accept", "drop", "reject", "jump", "goto", "return")


def _nft_rule(expr: list[Any], pkt: Packet) -> tuple[str, str, str]:
    """(match state, verdict, jump target) of one rule for ``pkt``."""
    state = _YES
    verdict, target = "", ""
    for item in expr:
        if not isinstance(item, dict) or not item:
            continue
        kind = next(iter(item))
        if kind == "match":
            s = _nft_match(item["match"], pkt)
            if s == _NO:
                return _NO, "", ""
            if s == _MAYBE:
                state = _MAYBE
        elif kind in _NFT_VERDICTS:
            verdict = kind
            if kind in ("jump", "goto") and isinstance(item[kind], dict):
                target = str(item[kind].get("target", ""))
            break
        elif kind in ("limit", "quota"):
            state = _MAYBE
    return state, verdict, target


def _nft_text(expr: list[Any]) -> str:
    """A rule's expressions as ``nft list`` would roughly print them."""
    parts = []
    for item in expr:
        if not isinstance(item, dict) or not item:
            continue
        kind, body = next(iter(item.items()))
        if kind == "match":
            op = body.get("op", "==")
            parts.append(" ".join(x for x in (_nft_side(body.get("left")),
                                              "" if op in ("==", "in") else op,
                                              _nft_side(body.get("right"))) if x))
        elif kind in ("jump", "goto"):
            parts.append(f"{kind} {body.get('target', '?') if isinstance(body, dict) else '?'}")
        elif kind in ("counter",):
            continue
        else:
            parts.append(kind)
    return " ".join(parts)


def _nft_side(side: Any) -> str:
    if isinstance(side, dict):
        if "payload" in side:
            return f"{side['payload'].get('protocol')} {side['payload'].get('field')}"
        if "meta" in side:
            return f"meta {side['meta'].get('key')}"
        if "ct" in side:
            return f"ct {side['ct'].get('key')}"
        if "set" in side:
            return "{ " + ", ".join(_nft_side(x) for x in side["set"]) + " }"
        if "range" in side:
            return "-".join(_nft_side(x) for x in side["range"])
        if "prefix" in side:
            return f"{side['prefix'].get('addr')}/{side['prefix'].get('len')}"
        return next(iter(side), "?")
    if isinstance(side, list):
        return ",".join(_nft_side(x) for x in side)
    return str(side)


def scan_nft(doc: dict[str, Any], packets: list[Packet]) -> list[Finding]:
    """Rules of an ``nft -j list ruleset`` document that drop ``packets``."""
    chains: dict[tuple[str, str, str], dict[str, Any]] = {}
    rules: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for item in doc.get("nftables", []):
        if not isinstance(item, dict):
            continue
        if "chain" in item:
            c = item["chain"]
            chains[(c.get("family"), c.get("table"), c.get("name"))] = c
        elif "rule" in item:
            r = item["rule"]
            rules.setdefault((r.get("family"), r.get("table"), r.get("chain")), []).append(r)
    found: list[Finding] = []
    for pkt in packets:
        for key, chain in chains.items():
            family = key[0]
            hook = chain.get("hook")
            applies = (family in ("ip", "inet") and hook == pkt.hook) or \
                (family == "netdev" and hook == "ingress" and pkt.hook == "input")
            if not applies:
                continue
            base = f"nft {family} {key[1]} {key[2]}"
            verdict, where, maybes = _nft_walk(key, rules, pkt, 0)
            for text in maybes:
                found.append(Finding(pkt, False, text, _nft_fix(key, pkt)))
            if verdict in ("drop", "reject"):
                found.append(Finding(pkt, True, where, _nft_fix(key, pkt)))
            elif verdict == "" and chain.get("policy") == "drop":
                found.append(Finding(pkt, True, f"{base}: policy drop, and no rule accepts it",
                                     _nft_fix(key, pkt)))
    return found


def _nft_walk(chain: tuple[str, str, str], rules: dict[tuple[str, str, str], list[Any]],
              pkt: Packet, depth: int) -> tuple[str, str, list[str]]:
    """(final verdict or "", the rule that gave it, rules that may drop) of one chain."""
    maybes: list[str] = []
    if depth > _MAX_DEPTH:
        return "", "", maybes
    for r in rules.get(chain, []):
        expr = r.get("expr", [])
        state, verdict, target = _nft_rule(expr, pkt)
        where = (f"nft {chain[0]} {chain[1]} {chain[2]}: {_nft_text(expr)} "
                 f"(handle {r.get('handle', '?')})")
        if state == _NO or not verdict:
            continue
        if state == _MAYBE:
            if verdict in ("drop", "reject"):
                maybes.append(where)
            continue
        if verdict in ("jump", "goto"):
            sub, sub_where, sub_maybes = _nft_walk((chain[0], chain[1], target), rules, pkt,
                                                   depth + 1)
            maybes += sub_maybes
            if sub or verdict == "goto":
                return sub, sub_where, maybes
            continue
        if verdict == "return":
            return "", "", maybes
        return verdict, where, maybes
    return "", "", maybes


def _nft_fix(chain: tuple[str, str, str], pkt: Packet) -> str:
    ports = "7370-7373" if pkt.proto == "tcp" else str(pkt.dport)
    return f"nft insert rule {chain[0]} {chain[1]} {chain[2]} {pkt.proto} dport {ports} accept"


# ---------------------------------------------------------------- iptables


def scan_iptables(text: str, packets: list[Packet]) -> list[Finding]:
    """Rules of ``iptables-save`` output (its filter table) that drop ``packets``."""
    policies: dict[str, str] = {}
    rules: dict[str, list[list[str]]] = {}
    table = ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("*"):
            table = line[1:]
        elif table != "filter" or not line or line.startswith("#"):
            continue
        elif line.startswith(":"):
            name, _, rest = line[1:].partition(" ")
            policies[name] = rest.split()[0] if rest else "-"
            rules.setdefault(name, [])
        elif line.startswith("-A "):
            try:
                words = shlex.split(line)
            except ValueError:
                continue
            if len(words) >= 2:
                rules.setdefault(words[1], []).append(words[2:])
    found: list[Finding] = []
    for pkt in packets:
        chain = "INPUT" if pkt.hook == "input" else "OUTPUT"
        if chain not in policies:
            continue
        verdict, where, maybes = _ipt_walk(chain, rules, pkt, 0)
        fix = (f"iptables -I {chain} -p {pkt.proto} --dport "
               f"{'7370:7373' if pkt.proto == 'tcp' else pkt.dport} -j ACCEPT")
        found += [Finding(pkt, False, m, fix) for m in maybes]
        if verdict in ("DROP", "REJECT"):
            found.append(Finding(pkt, True, where, fix))
        elif not verdict and policies.get(chain) == "DROP":
            found.append(Finding(pkt, True, f"iptables {chain}: policy DROP, and no rule "
                                 "accepts it", fix))
    return found


def _ipt_walk(chain: str, rules: dict[str, list[list[str]]], pkt: Packet,
              depth: int) -> tuple[str, str, list[str]]:
    maybes: list[str] = []
    if depth > _MAX_DEPTH:
        return "", "", maybes
    for words in rules.get(chain, []):
        state, target = _ipt_rule(words, pkt)
        where = f"iptables {chain}: -A {chain} {' '.join(words)}"
        if state == _NO or not target:
            continue
        if state == _MAYBE:
            if target in ("DROP", "REJECT"):
                maybes.append(where)
            continue
        if target == "ACCEPT" or target in ("DROP", "REJECT"):
            return target, where, maybes
        if target == "RETURN":
            return "", "", maybes
        if target in rules:
            sub, sub_where, sub_maybes = _ipt_walk(target, rules, pkt, depth + 1)
            maybes += sub_maybes
            if sub:
                return sub, sub_where, maybes
    return "", "", maybes


def _ipt_rule(words: list[str], pkt: Packet) -> tuple[str, str]:
    """(match state, target) of one ``-A`` rule's words (after the chain name)."""
    state, target, negate = _YES, "", False
    i = 0
    while i < len(words):
        w = words[i]
        arg = words[i + 1] if i + 1 < len(words) else ""
        if w == "!":
            negate = True
            i += 1
            continue
        hit: bool | None = None           # None: this word does not judge the packet
        step = 2
        if w in ("-j", "--jump", "-g", "--goto"):
            target = arg
        elif w in ("-m", "--match", "--comment", "--reject-with", "--log-prefix"):
            pass
        elif w in ("-p", "--protocol"):
            hit = arg in (pkt.proto, "all")
        elif w in ("--dport", "--destination-port", "--dports", "--destination-ports"):
            hit = _ipt_ports(arg, pkt.dport)
        elif w in ("-d", "--destination"):
            hit = _in_values(pkt.daddr, arg if "/" in arg else f"{arg}/32")
        elif w in ("--state", "--ctstate"):
            hit = "NEW" in arg.upper().split(",")
        elif w == "--pkt-type":
            hit = arg == pkt.pkttype
        elif w == "--dst-type":
            hit = arg.upper() == ("MULTICAST" if pkt.pkttype == "multicast" else "LOCAL")
        elif w.startswith("-"):
            state = _MAYBE if state == _YES else state     # -s, -i, --sport, limits...
            step = 2 if arg and not arg.startswith("-") else 1
        else:
            step = 1
        if hit is not None and hit == negate:
            return _NO, ""
        negate = False
        i += step
    return state, target


def _ipt_ports(spec: str, port: int) -> bool:
    for part in spec.split(","):
        lo, _, hi = part.partition(":")
        try:
            if int(lo or 0) <= port <= int(hi or lo or 65535):
                return True
        except ValueError:
            continue
    return False
