"""Finding nodes with mDNS / DNS-SD (``_pymr._tcp.local.``); the only zeroconf user.

mDNS finds nodes; it says nothing about liveness (a node killed with SIGKILL leaves its
record in long-running caches until the TTL): callers use a node only after an
authenticated hello on its control socket.

Every ``Zeroconf`` here is pinned to explicit interface addresses (``select_addresses``),
never "all interfaces", and browsing sends QM questions (answers come by multicast, so
several mDNS sockets on one host all see them).
"""

from __future__ import annotations

import ipaddress
import logging
import platform
import queue
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import ifaddr  # a dependency of zeroconf
from zeroconf import (
    DNSQuestionType,
    DNSService,
    DNSText,
    NonUniqueNameException,
    RecordUpdate,
    RecordUpdateListener,
    ServiceBrowser,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
)

from ..config import UNICODE_VERSION
from ..errors import ConfigError, DiscoveryError
from ..wire.protocol import PROTOCOL_VERSION

log = logging.getLogger(__name__)

SERVICE_TYPE = "_pymr._tcp.local."
#: Wait for the SRV/TXT/A records of a name the browser reported.
RESOLVE_TIMEOUT_MS = 1000
#: Interfaces never used by default: container and VM bridges.
_SKIP_IFACE = re.compile(r"^(lo|docker\d*|br-.*|veth.*|virbr.*|cni.*|flannel.*|podman.*)$")
#: An instance label is one DNS label (at most 63 bytes): name part + "-" + node id.
_MAX_LABEL = 63


# ---------------------------------------------------------------- names


def dns_label(text: str, limit: int = _MAX_LABEL) -> str:
    """``laptop.home`` -> ``laptop-home``: letters, digits and inner hyphens only."""
    label = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")
    return label[:limit].rstrip("-") or "pymr"


def instance_label(name: str, node_id: str) -> str:
    """The mDNS instance name: the host (or given) name plus the node id, one DNS label."""
    suffix = "-" + node_id
    return dns_label(name, _MAX_LABEL - len(suffix)) + suffix


# ---------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class Advert:
    """What a node advertises (ports other than control come from the hello)."""

    name: str
    node_id: str
    incarnation: str
    slots: int
    control_port: int
    address: str
    fingerprint: str
    pymr_version: str

    def properties(self) -> dict[str, str]:
        return {
            "v": str(PROTOCOL_VERSION), "id": self.node_id, "inc": self.incarnation,
            "slots": str(self.slots), "port": str(self.control_port),
            "py": platform.python_version(), "uc": UNICODE_VERSION, "fp": self.fingerprint,
            "pymr": self.pymr_version, "name": self.name[:200],
        }


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """A node as its mDNS record describes it (not yet authenticated)."""

    instance: str
    name: str
    node_id: str
    incarnation: str
    protocol: int
    slots: int
    control_port: int
    addresses: tuple[str, ...]
    python: str
    unicode: str
    fingerprint: str
    pymr_version: str = ""

    @property
    def control_endpoint(self) -> str:
        return f"tcp://{self.addresses[0]}:{self.control_port}" if self.addresses else ""

    def to_json(self) -> dict[str, object]:
        return {"instance": self.instance, "name": self.name, "node_id": self.node_id,
                "incarnation": self.incarnation, "protocol": self.protocol,
                "slots": self.slots, "addresses": list(self.addresses),
                "control_port": self.control_port, "python": self.python,
                "unicode": self.unicode, "fingerprint": self.fingerprint}


@dataclass(frozen=True, slots=True)
class Ignored:
    """A record seen but not used, and why."""

    instance: str
    reason: str
    fingerprint: str = ""


@dataclass
class BrowseResult:
    nodes: list[NodeRecord] = field(default_factory=list)
    ignored: list[Ignored] = field(default_factory=list)
    elapsed_s: float = 0.0
    #: seconds from the start of browsing until each accepted node was seen
    seen_after_s: dict[str, float] = field(default_factory=dict)
    #: node ids advertised by two live incarnations (a copied state directory)
    copied_ids: list[str] = field(default_factory=list)
    #: the interface addresses browsed
    interfaces: list[str] = field(default_factory=list)


def parse_record(info: ServiceInfo) -> NodeRecord:
    """A record from a resolved ServiceInfo; raises ValueError if it is not a pymr node."""
    props: dict[str, str] = {}
    for k, v in (info.properties or {}).items():
        if isinstance(k, bytes) and isinstance(v, bytes):
            props[k.decode("utf-8", "replace")] = v.decode("utf-8", "replace")
    try:
        protocol = int(props["v"])
        slots = int(props.get("slots", "0"))
        port = int(props.get("port", "0") or info.port or 0)
        node_id = props["id"]
    except (KeyError, ValueError) as exc:
        raise ValueError("not a pymr record (missing or bad TXT properties)") from exc
    addresses = tuple(a for a in info.parsed_addresses() if ":" not in a)   # IPv4 first
    addresses += tuple(a for a in info.parsed_addresses() if ":" in a)
    instance = info.name.removesuffix("." + SERVICE_TYPE)
    return NodeRecord(
        instance=instance, name=props.get("name", instance), node_id=node_id,
        incarnation=props.get("inc", ""), protocol=protocol, slots=slots, control_port=port,
        addresses=addresses, python=props.get("py", ""), unicode=props.get("uc", ""),
        fingerprint=props.get("fp", ""), pymr_version=props.get("pymr", ""))


def classify(rec: NodeRecord, fingerprint: str | None) -> str | None:
    """Why ``rec`` cannot be used by a member holding ``fingerprint`` (None: it can)."""
    if rec.protocol != PROTOCOL_VERSION:
        return (f"speaks pymr protocol {rec.protocol}, this machine {PROTOCOL_VERSION}: "
                "install the same pymr version everywhere")
    if rec.unicode and rec.unicode != UNICODE_VERSION:
        return (f"its Python has Unicode {rec.unicode}, this machine {UNICODE_VERSION}: word "
                "rules would differ; use the same Python version everywhere")
    if fingerprint is not None and rec.fingerprint != fingerprint:
        return f"another cluster (key fingerprint {rec.fingerprint or 'none'})"
    if not rec.addresses or not rec.control_port:
        return "its record has no address or port"
    return None


# ---------------------------------------------------------------- interfaces


def host_addresses() -> list[tuple[str, str]]:
    """Every (interface name, IPv4 address) of this host (network namespace)."""
    out: list[tuple[str, str]] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                out.append((adapter.nice_name, ip.ip))
    return out


def usable_by_default(ifname: str, ip: str) -> bool:
    """Skip loopback, container bridges and link-local addresses."""
    addr = ipaddress.ip_address(ip)
    return not (addr.is_loopback or addr.is_link_local or addr.is_unspecified
                or addr.is_multicast or _SKIP_IFACE.match(ifname))


def select_addresses(spec: str | Iterable[str] | None) -> list[str]:
    """IPv4 addresses to advertise and browse on.

    ``spec``: comma-separated interface names or addresses (``--interface``); None picks
    every address except loopback, container-bridge and link-local ones.
    """
    known = host_addresses()
    if spec is None or spec == "" or spec == []:
        chosen = [ip for name, ip in known if usable_by_default(name, ip)]
        if not chosen:
            have = ", ".join(f"{n} {ip}" for n, ip in known) or "none"
            raise DiscoveryError(
                "no usable network address (only loopback, container-bridge or link-local "
                f"ones: {have}); connect to a network, or pass --interface ADDR "
                "(--interface 127.0.0.1 keeps the cluster on this machine)")
        return _unique(chosen)
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    chosen = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        try:
            addr = ipaddress.ip_address(item)
        except ValueError:
            ips = [ip for n, ip in known if n == item]
            if not ips:
                names = sorted({n for n, _ in known})
                raise ConfigError(f"no interface {item!r} with an IPv4 address on this "
                                  f"machine (have: {', '.join(names)})") from None
            chosen.extend(ips)
            continue
        if addr.version != 4:
            raise ConfigError(f"{item}: only IPv4 interface addresses are supported")
        if item not in {ip for _, ip in known}:
            raise ConfigError(f"{item} is not an address of this machine "
                              f"(have: {', '.join(ip for _, ip in known)})")
        chosen.append(item)
    if not chosen:
        raise ConfigError("--interface names no address")
    return _unique(chosen)


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


# ---------------------------------------------------------------- browsing


class Browser:
    """A running mDNS browser (QM questions) that keeps the current records.

    ``records()`` is a snapshot; names withdrawn with a goodbye disappear.
    """

    def __init__(self, interfaces: list[str], zc: Zeroconf | None = None) -> None:
        self.interfaces = interfaces
        self._own_zc = zc is None
        self.zc = zc
        self._browser: ServiceBrowser | None = None
        self._events: queue.SimpleQueue[tuple[str, ServiceStateChange]] = queue.SimpleQueue()
        self._records: dict[str, NodeRecord] = {}
        self._bad: dict[str, str] = {}
        self.started = 0.0
        self.seen_after_s: dict[str, float] = {}

    def start(self) -> Browser:
        self.started = time.monotonic()
        if self.zc is None:
            self.zc = Zeroconf(interfaces=list(self.interfaces))
        self._browser = ServiceBrowser(self.zc, SERVICE_TYPE, handlers=[self._on_change],
                                       question_type=DNSQuestionType.QM)
        return self

    def __enter__(self) -> Browser:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._browser is not None:
            self._browser.cancel()
            self._browser = None
        if self._own_zc and self.zc is not None:
            self.zc.close()
            self.zc = None

    def _on_change(self, zeroconf: Zeroconf, service_type: str, name: str,
                   state_change: ServiceStateChange) -> None:
        # Runs in the browser thread: only hand the name over.
        self._events.put((name, state_change))

    def poll(self, timeout_s: float) -> bool:
        """Process browser events for up to ``timeout_s``; True if the records changed."""
        changed = False
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            left = deadline - time.monotonic()
            try:
                name, change = self._events.get(timeout=max(0.0, left)) if left > 0 \
                    else self._events.get_nowait()
            except queue.Empty:
                return changed
            changed = self._apply(name, change) or changed

    def _apply(self, name: str, change: ServiceStateChange) -> bool:
        if change is ServiceStateChange.Removed:
            self._bad.pop(name, None)
            return self._records.pop(name, None) is not None
        assert self.zc is not None
        info = ServiceInfo(SERVICE_TYPE, name)
        if not info.load_from_cache(self.zc):
            try:
                info.request(self.zc, RESOLVE_TIMEOUT_MS, question_type=DNSQuestionType.QM)
            except Exception as exc:  # zeroconf raises on closing; never crash a browser
                log.debug("could not resolve %s: %s", name, exc)
                return False
        try:
            rec = parse_record(info)
        except ValueError as exc:
            self._bad[name] = str(exc)
            return False
        if not rec.addresses:
            return False     # the address record has not arrived yet; an update follows
        old = self._records.get(name)
        self._records[name] = rec
        self.seen_after_s.setdefault(name, time.monotonic() - self.started)
        return old != rec

    def records(self) -> list[NodeRecord]:
        return sorted(self._records.values(), key=lambda r: (r.name, r.node_id))

    def malformed(self) -> list[Ignored]:
        return [Ignored(name.removesuffix("." + SERVICE_TYPE), reason)
                for name, reason in self._bad.items()]

    def result(self, fingerprint: str | None) -> BrowseResult:
        res = BrowseResult(elapsed_s=time.monotonic() - self.started,
                           interfaces=list(self.interfaces))
        res.ignored.extend(self.malformed())
        incarnations: dict[str, set[str]] = {}
        for rec in self.records():
            why = classify(rec, fingerprint)
            if why is None:
                res.nodes.append(rec)
                res.seen_after_s[rec.instance] = self.seen_after_s.get(
                    rec.instance + "." + SERVICE_TYPE, res.elapsed_s)
                incarnations.setdefault(rec.node_id, set()).add(rec.incarnation)
            else:
                res.ignored.append(Ignored(rec.instance, why, rec.fingerprint))
        res.copied_ids = sorted(i for i, incs in incarnations.items() if len(incs) > 1)
        return res


def browse(interfaces: list[str], window_s: float, *, fingerprint: str | None = None,
           min_nodes: int | None = None) -> BrowseResult:
    """Browse for ``window_s`` seconds, or until ``min_nodes`` usable nodes answered.

    ``fingerprint`` None accepts every cluster (used by a node that has no key yet).
    """
    with Browser(interfaces) as b:
        deadline = b.started + window_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if b.poll(min(left, 0.05)) and min_nodes:
                if len(b.result(fingerprint).nodes) >= min_nodes:
                    break
        return b.result(fingerprint)


# ---------------------------------------------------------------- advertising


class _PassiveWatch(RecordUpdateListener):
    """Hears every pymr record multicast on the LAN without asking (no query traffic).

    Nodes announce themselves when they start and answer every browser by multicast,
    so a node that listens hears the others without adding questions: a node that asked
    too would make every responder multicast again, and the one-second multicast rate
    limit of RFC 6762 would then delay the answers that ``pymr job`` is waiting for.
    """

    def __init__(self, on_name: Callable[[str], None]) -> None:
        self.on_name = on_name
        self._names: set[str] = set()
        self._suffix = "." + SERVICE_TYPE.lower()

    def async_update_records(self, zc: Zeroconf, now: float,
                             records: list[RecordUpdate]) -> None:
        for update in records:
            rec = update.new
            if isinstance(rec, (DNSText, DNSService)) and \
                    rec.name.lower().endswith(self._suffix):
                self._names.add(rec.name)

    def async_update_records_complete(self) -> None:
        names, self._names = self._names, set()
        for name in names:
            self.on_name(name)


class Advertiser:
    """Registers a node's record; watches the LAN for a copied identity or another cluster.

    ``warn`` receives one line per problem, once; ``on_record`` every other node's record
    heard.
    """

    def __init__(self, advert: Advert, interfaces: list[str],
                 warn: Callable[[str], None] | None = None,
                 on_record: Callable[[NodeRecord], None] | None = None) -> None:
        self.advert = advert
        self.interfaces = interfaces
        self.warn = warn or (lambda text: log.warning("%s", text))
        #: every record heard (in zeroconf's loop: must not block); peer exchange uses it
        self.on_record = on_record
        self.zc: Zeroconf | None = None
        self.info: ServiceInfo | None = None
        self._watch: _PassiveWatch | None = None
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    @property
    def instance(self) -> str:
        return self.info.name.removesuffix("." + SERVICE_TYPE) if self.info else ""

    def _info(self, label: str) -> ServiceInfo:
        a = self.advert
        return ServiceInfo(SERVICE_TYPE, f"{label}.{SERVICE_TYPE}",
                           addresses=[socket.inet_aton(a.address)], port=a.control_port,
                           properties=a.properties(), server=f"{label}.local.")

    def start(self) -> str:
        """Probe and announce; returns the instance name registered."""
        self.zc = Zeroconf(interfaces=list(self.interfaces))
        label = instance_label(self.advert.name, self.advert.node_id)
        info = self._info(label)
        try:
            self.zc.register_service(info, allow_name_change=False)
        except NonUniqueNameException:
            self._warn_once(
                "copied:" + label,
                f"another live node already advertises {label}: the same name and node id "
                f"({self.advert.node_id}). If this machine's pymr state directory was copied "
                "from another machine, delete its 'node_id' file and restart; advertising "
                "this node under a changed name meanwhile")
            info = self._info(instance_label(self.advert.name + "-" +
                                             self.advert.incarnation[:4],
                                             self.advert.node_id))
            self.zc.register_service(info, allow_name_change=True)
        self.info = info
        self._watch = _PassiveWatch(self._on_name)
        self.zc.add_listener(self._watch, None)
        return self.instance

    def _on_name(self, name: str) -> None:
        # Runs in zeroconf's event loop: read the cache only, never block. Our own name is
        # checked too: a copy of this node may advertise it (probing misses a conflict when
        # several mDNS sockets share one host); ``check`` tells us apart by incarnation.
        if self.zc is None or self.info is None:
            return
        info = ServiceInfo(SERVICE_TYPE, name)
        try:
            info.load_from_cache(self.zc)
            rec = parse_record(info)
        except Exception:      # a malformed record of someone else is not our problem
            return
        self.check(rec)
        if self.on_record is not None and rec.node_id != self.advert.node_id:
            self.on_record(rec)

    def check(self, rec: NodeRecord) -> None:
        """Warn about a copied identity or another cluster on the LAN (once each)."""
        a = self.advert
        if rec.node_id == a.node_id and rec.incarnation != a.incarnation:
            self._warn_once(
                "copied:" + rec.incarnation,
                f"another live node uses this node's id {a.node_id} ({rec.instance} at "
                f"{', '.join(rec.addresses)}, incarnation {rec.incarnation}): its pymr state "
                "directory was copied. Delete the 'node_id' file on one of them and restart it")
        elif rec.fingerprint and rec.fingerprint != a.fingerprint:
            self._warn_once(
                "cluster:" + rec.fingerprint,
                f"another pymr cluster is on this network ({rec.name} at "
                f"{', '.join(rec.addresses)}, key fingerprint {rec.fingerprint}); its nodes "
                "are ignored. To merge, import one cluster's key on the other's machines "
                "('pymr key export' there, 'pymr key import TOKEN --force' here)")

    def _warn_once(self, key: str, text: str) -> None:
        with self._lock:
            if key in self._warned:
                return
            self._warned.add(key)
        self.warn(text)

    def close(self, withdraw: bool = True) -> None:
        """Withdraw the record (goodbye packets) and stop."""
        if self.zc is not None:
            if self._watch is not None:
                self.zc.remove_listener(self._watch)
                self._watch = None
            if self.info is not None and withdraw:
                try:
                    self.zc.unregister_service(self.info)
                except Exception as exc:   # closing anyway
                    log.debug("unregister failed: %s", exc)
            self.zc.close()
            self.zc = None
