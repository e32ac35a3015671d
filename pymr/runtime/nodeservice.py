"""What ``pymr node`` runs on a machine, around the node daemon: the service of a LAN node.

``NodeService`` owns the parts that make a daemon a member of a cluster on a real network:

* the **home lock**: one node per pymr home (a second would share the node id and the data
  directory), an ``flock`` so that a killed node leaves none behind;
* the **cluster key**: with none, it looks for a cluster on the network for a while and
  either says how to join it or founds a new one;
* the **ports**: the base port and the next three, or free ports when one is taken;
* the **mDNS advertiser** and the **peer keeper** (``--join`` seeds, peer exchange);
* the **address watch**: when the serving address goes away (DHCP, Wi-Fi), the daemon is
  stopped and started again on the new address.

The CLI builds it from its options, installs the signal handlers (which call ``stop``) and
calls ``run``; what the service has to tell goes through ``say`` (notes, one line each, on
stderr) and ``announce`` (the serving and stopped lines, on stdout).
"""

from __future__ import annotations

import fcntl
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ..config import FOUND_DISCOVER_S, NodeOptions
from ..errors import ConfigError, PymrError, TransportError
from ..net.security import ClusterKey
from ..wording import count_of

#: How often the service checks that its address is still there.
ADDRESS_CHECK_INTERVAL_S = 3.0


@dataclass(frozen=True)
class NodeConfig:
    """``pymr node``'s options."""

    base_port: int                      # BASE..BASE+3, free ports if taken; 0: free ports
    name: str = ""                      # shown in 'pymr status' ("": the host name)
    slots: int = 0                      # executors (0: cores)
    interface: str | None = None        # interfaces to serve and advertise on (None: default)
    builtin_only: bool = False
    shared_fs: bool = False             # read splits from the files by path
    memory: int = 0                     # the executors' budget (0: a quarter of the machine)
    retain_memory: int | None = None    # map outputs kept in memory (None: the default)
    discover_s: float | None = None     # with no key: how long to look for a cluster
    join: list[str] = field(default_factory=list)   # control endpoints to join through


def _print_line(text: str) -> None:
    print(text, flush=True)


class NodeService:
    """A node of a LAN cluster on this machine: ``with service: service.prepare() and
    service.run()``; ``stop()`` (from a signal handler) ends ``run``."""

    def __init__(self, config: NodeConfig, state: Any, say: Callable[[str], None],
                 announce: Callable[[str], None] = _print_line) -> None:
        self.config = config
        self.state = state
        self.say = say
        self.announce = announce
        self.requested = False          # stop() was called
        self.restart = False            # the address went away: serve again on the new one
        self.event = threading.Event()  # wakes the address watch
        self.key: ClusterKey | None = None
        self.node_id = ""
        self.addresses: list[str] = []
        self._daemon: Any = None
        self._lock_fd: int | None = None

    # ------------------------------------------------------------ the home lock
    def __enter__(self) -> NodeService:
        self.state.ensure()
        self._lock_fd = lock_home(self.state.home)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # ------------------------------------------------------------ the key
    def prepare(self) -> bool:
        """Pick the addresses and the cluster key (founding a cluster if none is around).
        False: this machine holds no key and a cluster is on the network (the notes said
        how to join it); nothing was started."""
        from ..net.discovery import browse, select_addresses

        self.node_id = self.state.node_id()
        self.addresses = select_addresses(self.config.interface)
        if not self.state.has_key():
            window = FOUND_DISCOVER_S if self.config.discover_s is None \
                else self.config.discover_s
            if window > 0:
                self.say(f"no cluster key in {self.state.home}; looking for a pymr cluster "
                         f"on this network for {window:g} s ({', '.join(self.addresses)})")
                seen = browse(self.addresses, window)
                others = seen.nodes + [i for i in seen.ignored if i.fingerprint]
                if others:
                    names = ", ".join(sorted({getattr(o, "name", "") or o.instance
                                              for o in others}))
                    fps = sorted({o.fingerprint for o in others if o.fingerprint})
                    self.say(f"found a pymr cluster on this network ({names}; key "
                             f"fingerprint {', '.join(fps)}). To join it: run 'pymr key "
                             "export' on one of its machines, then 'pymr key import TOKEN' "
                             "here and start 'pymr node' again. To found a separate cluster "
                             "instead: 'pymr keygen'")
                    return False
            key = ClusterKey.generate()
            path = self.state.save_key(key)
            self.say(f"founded a new pymr cluster (key fingerprint {key.fingerprint}); its "
                     f"key is in {path} (mode 0600)")
            self.say("to add another machine, import this join token there (it is the "
                     "cluster's secret; 'pymr key export' prints it again):")
            self.say(f"  pymr key import {key.export_token()}")
        self.key = self.state.load_key()
        return True

    # ------------------------------------------------------------ running
    def run(self) -> None:
        """Serve until ``stop``; when the address goes away, wait for one and serve again."""
        addresses = self.addresses
        while not self.requested:
            self._serve(addresses)
            if self.requested or not self.restart:
                break
            addresses = self._wait_for_addresses()

    def stop(self) -> None:
        """Stop the node (safe in a signal handler: it sets flags and wakes the loops)."""
        self.requested = True
        self.event.set()
        if self._daemon is not None:
            self._daemon.stop()

    def _wait_for_addresses(self) -> list[str]:
        from ..net.discovery import select_addresses

        told = False
        while not self.requested:
            try:
                return select_addresses(self.config.interface)
            except PymrError as exc:
                if not told:
                    self.say(f"{exc}; waiting for an address (Ctrl-C to stop)")
                    told = True
                self.event.wait(ADDRESS_CHECK_INTERVAL_S)
        return []

    def _serve(self, addresses: list[str]) -> None:
        from .._version import __version__
        from ..net.discovery import Advert, Advertiser

        cfg, key = self.config, self.key
        assert key is not None, "prepare() first"
        host = addresses[0]
        if len(addresses) > 1:
            self.say(f"several addresses ({', '.join(addresses)}): the node serves on {host} "
                     "only (pass --interface to choose); mDNS runs on all of them")
        opts = NodeOptions(name=cfg.name, slots=cfg.slots, host=host, base_port=cfg.base_port,
                           home=self.state.home, builtin_only=cfg.builtin_only,
                           read_paths=cfg.shared_fs, memory=cfg.memory)
        if cfg.retain_memory is not None:
            opts = replace(opts, retain_memory=cfg.retain_memory)
        self.restart = False
        daemon = start_daemon(opts, key, self.node_id, self.say)
        self._daemon = daemon
        advertiser = None
        watcher = None
        keeper = None
        try:
            port = int(daemon.endpoints.control.rsplit(":", 1)[1])
            keeper = self._keeper(daemon)                # --join seeds, peer exchange
            advertiser = Advertiser(Advert(name=daemon.name, node_id=self.node_id,
                                           incarnation=daemon.incarnation, slots=daemon.slots,
                                           control_port=port, address=host,
                                           fingerprint=key.fingerprint,
                                           pymr_version=__version__),
                                    addresses, warn=lambda text: self.say(f"warning: {text}"),
                                    on_record=keeper.heard)
            instance = advertiser.start()
            self.announce(
                f"pymr node {daemon.name} (id {self.node_id}, {count_of(daemon.slots, 'slot')}) "
                f"serving cluster {key.fingerprint} on {host}: control port {port}; "
                f"advertised as {instance!r}"
                f"{' (built-in jobs only)' if cfg.builtin_only else ''}. Stop with Ctrl-C.")
            watcher = threading.Thread(target=self._watch_address, args=(host, daemon),
                                       name="pymr-address-watch", daemon=True)
            watcher.start()
            keeper.start()
            if not self.requested:
                daemon.run()
        finally:
            if keeper is not None:
                keeper.stop()
            if advertiser is not None:
                # Withdraw first: nobody should pick a closing node. (An address that is
                # gone cannot send goodbyes; its record expires by TTL.)
                advertiser.close(withdraw=not self.restart)
            self._daemon = None
            daemon.close()
            if watcher is not None:
                self.event.set()
                watcher.join(timeout=5)
                if not self.requested:
                    self.event.clear()
        if self.requested:
            self.announce(f"pymr node {daemon.name} stopped; its advertisement was withdrawn")

    def _watch_address(self, host: str, daemon: Any) -> None:
        """The address watch thread: stop the daemon for a restart when ``host`` is gone."""
        from ..net.discovery import select_addresses

        while not self.event.wait(ADDRESS_CHECK_INTERVAL_S):
            try:
                now = select_addresses(self.config.interface)
            except Exception:
                now = []
            if host not in now:
                self.say(f"address {host} is gone; restarting the node on the new address")
                self.restart = True
                daemon.stop()
                return

    def _keeper(self, daemon: Any) -> Any:
        """The thread that redials the ``join`` seeds and keeps the members."""
        from ..net.keeper import PeerKeeper
        from ..net.peerstore import PeerStore

        assert daemon.endpoints is not None and self.key is not None
        me = {"node_id": daemon.node_id, "name": daemon.name,
              "endpoint": daemon.endpoints.control}
        return PeerKeeper(daemon.members, self.key, me=me, seeds=list(self.config.join),
                          store=PeerStore(self.state.home), say=self.say)


def lock_home(home: Any) -> int:
    """One node per pymr home. A second one would share the node id (masters refuse the
    pair as a copied identity) and the data directory: refuse it at start instead. The
    lock is ``flock``, so a killed node leaves none behind."""
    fd = os.open(os.path.join(home, "node.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
        os.close(fd)
        raise ConfigError(f"another 'pymr node' already runs from {home} (pid {holder}): "
                          "stop it first, or give this one its own --home") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def ports_free(host: str, base: int) -> bool:
    """Whether ``base``..``base+3`` can be bound on ``host`` now."""
    socks = []
    try:
        for offset in range(4):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, base + offset))
        return True
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()


def start_daemon(opts: NodeOptions, key: ClusterKey, node_id: str,
                 say: Callable[[str], None]) -> Any:
    """Start a daemon on the fixed ports, or on free ports if one is taken."""
    from .node import NodeDaemon

    if opts.base_port and not ports_free(opts.host, opts.base_port):
        say(f"ports {opts.base_port}-{opts.base_port + 3} on {opts.host} are taken; using "
            "free ports (they are advertised)")
        opts = replace(opts, base_port=0)
    daemon = NodeDaemon(opts, key, node_id=node_id)
    try:
        daemon.start()
        return daemon
    except TransportError as exc:
        daemon.close()
        if not opts.base_port:
            raise
        say(f"{exc}; using free ports (they are advertised)")
    daemon = NodeDaemon(replace(opts, base_port=0), key, node_id=node_id)
    try:
        daemon.start()
    except BaseException:
        daemon.close()
        raise
    return daemon
