"""pymr.net.firewall: walking nftables and iptables rules for the packets pymr needs.

The nftables document is what ``nft -j list ruleset`` (nftables 1.0.6) printed for:

    table inet filt {
        chain input { type filter hook input priority filter; policy accept;
            ct state established,related accept
            tcp dport 7372 drop
            udp dport { 53, 5353 } drop
            tcp dport 7370-7373 reject
            meta pkttype multicast counter drop
            numgen random mod 100 < 3 drop
            jump sub }
        chain sub { tcp dport 7373 drop } }
    table ip t2 { chain out { type filter hook output priority filter; policy drop;
            tcp dport != 7372 accept } }
"""

from __future__ import annotations

from typing import Any

from pymr.net.firewall import Packet, pymr_packets, scan_iptables, scan_nft


def match(proto: str, field: str, right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": {"payload": {"protocol": proto, "field": field}},
                      "right": right}}


def rule(chain: str, handle: int, *expr: Any, family: str = "inet",
         table: str = "filt") -> dict[str, Any]:
    return {"rule": {"family": family, "table": table, "chain": chain, "handle": handle,
                     "expr": list(expr)}}


def chain(name: str, hook: str | None = None, policy: str = "accept", family: str = "inet",
          table: str = "filt") -> dict[str, Any]:
    c: dict[str, Any] = {"family": family, "table": table, "name": name}
    if hook:
        c.update(type="filter", hook=hook, prio=0, policy=policy)
    return {"chain": c}


def ruleset(*items: Any) -> dict[str, Any]:
    return {"nftables": [{"metainfo": {"json_schema_version": 1}}, *items]}


SAMPLE = ruleset(
    {"table": {"family": "inet", "name": "filt", "handle": 1}},
    chain("input", "input"), chain("sub"),
    rule("input", 2, {"match": {"op": "in", "left": {"ct": {"key": "state"}},
                                "right": ["established", "related"]}}, {"accept": None}),
    rule("input", 3, match("tcp", "dport", 7372), {"drop": None}),
    rule("input", 5, match("udp", "dport", {"set": [53, 5353]}), {"drop": None}),
    rule("input", 6, match("tcp", "dport", {"range": [7370, 7373]}),
         {"reject": {"type": "icmpx", "expr": "port-unreachable"}}),
    rule("input", 8, {"match": {"op": "==", "left": {"meta": {"key": "pkttype"}},
                                "right": "multicast"}}, {"counter": None}, {"drop": None}),
    rule("input", 9, {"match": {"op": "<", "left": {"numgen": {"mode": "random", "mod": 100}},
                                "right": 3}}, {"drop": None}),
    rule("input", 12, {"jump": {"target": "sub"}}),
    rule("sub", 13, match("tcp", "dport", 7373), {"drop": None}),
    {"table": {"family": "ip", "name": "t2", "handle": 3}},
    chain("out", "output", "drop", family="ip", table="t2"),
    rule("out", 2, match("tcp", "dport", 7372, "!="), {"accept": None}, family="ip",
         table="t2"),
)
PACKETS = pymr_packets(range(7370, 7374), "198.18.80.12", serving=True)


def dropped(findings: list[Any], certain: bool = True) -> dict[str, str]:
    return {f.packet.what: f.rule for f in findings if f.certain is certain}


def test_nft_first_drop_of_each_packet_with_its_rule_and_fix() -> None:
    found = scan_nft(SAMPLE, PACKETS)
    got = dropped(found)
    assert got["mDNS answers and questions from others (udp 5353 in)"] == \
        "nft inet filt input: udp dport { 53, 5353 } drop (handle 5)"
    assert got["connections to this node's port 7372 (tcp in)"] == \
        "nft inet filt input: tcp dport 7372 drop (handle 3)"
    assert got["connections to this node's port 7370 (tcp in)"].endswith("reject (handle 6)")
    # the output policy drops mDNS out and the one port not accepted
    assert got["mDNS questions and answers of this machine (udp 5353 out)"] == \
        "nft ip t2 out: policy drop, and no rule accepts it"
    assert "connections to nodes' port 7372 (tcp out)" in got
    assert "connections to nodes' port 7371 (tcp out)" not in got
    fixes = {f.fix for f in found}
    assert "nft insert rule inet filt input udp dport 5353 accept" in fixes
    assert "nft insert rule inet filt input tcp dport 7370-7373 accept" in fixes


def test_nft_jumps_unknown_matches_and_established() -> None:
    only_sub = ruleset(chain("input", "input"), chain("sub"),
                       rule("input", 1, {"match": {"op": "in", "left": {"ct": {"key": "state"}},
                                                   "right": ["established"]}},
                            {"accept": None}),
                       rule("input", 2, {"match": {"op": "==", "left": {"meta": {
                           "key": "iifname"}}, "right": "wlan0"}}, {"drop": None}),
                       rule("input", 3, {"jump": {"target": "sub"}}),
                       rule("sub", 4, match("tcp", "dport", 7373), {"drop": None}))
    found = scan_nft(only_sub, PACKETS)
    assert dropped(found) == {"connections to this node's port 7373 (tcp in)":
                              "nft inet filt sub: tcp dport 7373 drop (handle 4)"}
    maybe = dropped(found, certain=False)   # an interface match: it may drop any of them
    assert "mDNS answers and questions from others (udp 5353 in)" in maybe
    assert all("iifname" in r for r in maybe.values())


def test_nft_multicast_address_rules_and_other_families() -> None:
    mc = ruleset(chain("input", "input", family="ip", table="f"),
                 rule("input", 1, match("ip", "daddr", {"prefix": {"addr": "224.0.0.0",
                                                                   "len": 4}}),
                      {"drop": None}, family="ip", table="f"),
                 chain("fwd", "forward", family="bridge", table="b"),
                 rule("fwd", 1, {"drop": None}, family="bridge", table="b"))
    got = dropped(scan_nft(mc, PACKETS))
    assert list(got) == ["mDNS answers and questions from others (udp 5353 in)"]


def test_empty_ruleset_drops_nothing() -> None:
    assert scan_nft(ruleset(), PACKETS) == []
    assert scan_nft({"nftables": "junk"}, PACKETS) == []   # type: ignore[dict-item]


IPTABLES = """# Generated by iptables-save
*nat
:PREROUTING ACCEPT [0:0]
-A PREROUTING -p udp --dport 5353 -j DROP
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT DROP [0:0]
:MYCHAIN - [0:0]
-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p udp -m udp --dport 5353 -j DROP
-A INPUT -s 10.0.0.0/8 -p tcp -m multiport --dports 7370:7373 -j REJECT
-A INPUT -j MYCHAIN
-A MYCHAIN -p tcp ! --dport 7372 -j RETURN
-A MYCHAIN -p tcp -m comment --comment "no pymr" -j DROP
-A OUTPUT -p tcp -m tcp --dport 7370:7373 -j ACCEPT
-A OUTPUT -d 224.0.0.251/32 -p udp -j ACCEPT
COMMIT
"""


def test_iptables_filter_table_policies_negation_and_chains() -> None:
    found = scan_iptables(IPTABLES, PACKETS)
    got = dropped(found)
    assert got == {
        "mDNS answers and questions from others (udp 5353 in)":
            "iptables INPUT: -A INPUT -p udp -m udp --dport 5353 -j DROP",
        "connections to this node's port 7372 (tcp in)":
            "iptables MYCHAIN: -A MYCHAIN -p tcp -m comment --comment no pymr -j DROP",
    }
    maybe = dropped(found, certain=False)          # only from 10.0.0.0/8
    assert set(maybe) == {f"connections to this node's port {p} (tcp in)"
                          for p in range(7370, 7374)}
    assert {f.fix for f in found} >= {"iptables -I INPUT -p udp --dport 5353 -j ACCEPT",
                                      "iptables -I INPUT -p tcp --dport 7370:7373 -j ACCEPT"}


def test_iptables_output_policy_drop() -> None:
    text = "*filter\n:INPUT ACCEPT [0:0]\n:OUTPUT DROP [0:0]\nCOMMIT\n"
    got = dropped(scan_iptables(text, [Packet("x", "output", "udp", 5353, "224.0.0.251",
                                              "multicast")]))
    assert got == {"x": "iptables OUTPUT: policy DROP, and no rule accepts it"}
