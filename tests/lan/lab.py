"""A simulated LAN for tests: hosts in network namespaces on a bridge with no uplink.

The bridge lives in its own namespace, so nothing is attached to the machine's real
interfaces; mDNS and every pymr socket stay inside the lab. ``Lab.destroy`` stops every
process the lab started (by PID), kills anything left inside the lab's namespaces
(only the lab starts processes there) and deletes the namespaces; it runs even when a
test fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests import helpers

REPO = Path(__file__).resolve().parents[2]
#: 198.18.0.0/15 is reserved for network benchmarks; the lab's /24 never leaves the bridge.
SUBNET = "198.18.80"
#: A node must print its "serving" line within this time (executors spawn first).
NODE_START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


def lab_unavailable() -> tuple[str, str] | None:
    """(the missing tool, why) when LAN tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "root", "LAN tests need root (network namespaces)"
    if shutil.which("ip") is None:
        return "ip", "LAN tests need 'ip' (iproute2)"
    probe = f"pymr-lab-probe-{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return "ip netns", f"'ip netns add' does not work here: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _env() -> dict[str, str]:
    """The environment of every lab command: no ``PYMR_*`` of the caller's (each host has
    its own ``PYMR_HOME``), this checkout first on the path."""
    return helpers.subprocess_env(clean=True)


@dataclass
class Host:
    lab: Lab
    name: str
    address: str
    home: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    node: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def ns(self) -> str:
        return f"{self.lab.prefix}-{self.name}"

    def argv(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns, "env", f"PYMR_HOME={self.home}", *args]

    def pymr(self, *args: str, timeout: float = 120.0, check: bool = False,
             input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``pymr ARGS`` on this host and wait (bounded)."""
        return subprocess.run(self.argv(sys.executable, "-m", "pymr", *args), env=_env(),
                              capture_output=True, text=True, timeout=timeout, check=check,
                              input=input_text)

    def sh(self, script: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run a shell script on this host (in the mount namespace ``ip netns exec`` makes)."""
        return subprocess.run(self.argv("sh", "-c", script), env=_env(), capture_output=True,
                              text=True, timeout=timeout)

    def spawn(self, *args: str, log_name: str = "out.log") -> subprocess.Popen[bytes]:
        """Start ``pymr ARGS`` in the background; the lab stops it."""
        log = self.home.parent / f"{self.name}-{log_name}"
        with open(log, "ab") as f:
            proc = subprocess.Popen(self.argv(sys.executable, "-m", "pymr", *args), env=_env(),
                                    stdout=f, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(proc)
        self.lab.procs.append(proc)
        return proc

    def start_node(self, *args: str, wait: bool = True) -> subprocess.Popen[bytes]:
        proc = self.spawn("node", *args, log_name="node.log")
        self.node = proc
        self.log = self.home.parent / f"{self.name}-node.log"
        if wait:
            self.wait_serving()
        return proc

    def node_output(self) -> str:
        return self.log.read_text(errors="replace") if self.log and self.log.exists() else ""

    def wait_serving(self, timeout_s: float = NODE_START_TIMEOUT_S) -> None:
        assert self.node is not None
        helpers.wait_serving(self.node, self.node_output, timeout_s, f"node on {self.name}")

    def stop_node(self, sig: int = signal.SIGTERM) -> int:
        assert self.node is not None
        return self.lab.stop(self.node, sig)

    def status(self, *args: str) -> dict[str, Any]:
        r = self.pymr("status", "--json", *args, timeout=60)
        if not r.stdout.strip():
            raise AssertionError(f"pymr status printed nothing (exit {r.returncode}): "
                                 f"{r.stderr}")
        doc: dict[str, Any] = json.loads(r.stdout)
        doc["exit_code"] = r.returncode
        doc["stderr"] = r.stderr
        return doc

    def link_tx_bytes(self) -> int:
        """Bytes this host sent into the bridge (counted on the bridge side)."""
        r = subprocess.run(["ip", "netns", "exec", self.lab.bridge_ns, "cat",
                            f"/sys/class/net/v-{self.name}/statistics/rx_bytes"],
                           capture_output=True, text=True, check=True)
        return int(r.stdout)


class Lab:
    """The bridge namespace plus hosts; ``destroy`` removes everything it made."""

    def __init__(self, tag: str | None = None) -> None:
        self.tag = tag or f"t{os.getpid()}"
        self.prefix = f"pymr-lab-{self.tag}"
        self.bridge_ns = f"{self.prefix}-br"
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
        self.hosts: dict[str, Host] = {}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.namespaces: list[str] = []
        self.token = ""          # the cluster's join token, once made
        self._next = 10

    def create(self) -> Lab:
        ip("netns", "add", self.bridge_ns)
        self.namespaces.append(self.bridge_ns)
        ip("-n", self.bridge_ns, "link", "set", "lo", "up")
        ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        ip("-n", self.bridge_ns, "link", "set", "br0", "up")
        return self

    def _new_host(self, name: str, address: str, peer: str, peer_ns: str) -> Host:
        """A host namespace whose eth0 (``address``/24) is a veth to ``peer`` in
        ``peer_ns``; the namespace is recorded before anything can fail in it."""
        host = Host(self, name, address, self.dir / name / "home")
        host.home.parent.mkdir(parents=True, mode=0o700)
        ns = host.ns
        ip("netns", "add", ns)
        self.namespaces.append(ns)
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", peer,
           "netns", peer_ns)
        ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        return host

    def add_host(self, name: str) -> Host:
        self._next += 1
        host = self._new_host(name, f"{SUBNET}.{self._next}", f"v-{name}", self.bridge_ns)
        ip("-n", self.bridge_ns, "link", "set", f"v-{name}", "master", "br0", "up")
        ip("-n", host.ns, "route", "add", "224.0.0.0/4", "dev", "eth0")
        self.hosts[name] = host
        return host

    def add_node(self, name: str, *args: str, wait: bool = True) -> Host:
        """The host ``name`` (made if new) holding the cluster key, running
        ``pymr node --slots 1 ARGS`` (and serving, unless ``wait`` is false)."""
        host = self.hosts.get(name) or self.add_host(name)
        if not (host.home / "cluster.key").exists():
            r = host.pymr("key", "import", self.token)
            assert r.returncode == 0, r.stderr
        host.start_node("--slots", "1", *args, wait=wait)
        return host

    def add_routed_host(self, name: str) -> Host:
        """A host on another subnet behind a router: unicast reaches the LAN, mDNS does not.

        (Link-local multicast is never forwarded, as on a real routed network.)
        """
        router = self.hosts.get("router") or self.add_host("router")
        head, last = SUBNET.rsplit(".", 1)
        rns, sub = router.ns, f"{head}.{int(last) + 1}"
        subprocess.run(["ip", "netns", "exec", rns, "sh", "-c",
                        "echo 1 > /proc/sys/net/ipv4/ip_forward"], check=True)
        host = self._new_host(name, f"{sub}.2", f"r-{name}", rns)
        ip("-n", rns, "addr", "add", f"{sub}.1/24", "dev", f"r-{name}")
        ip("-n", rns, "link", "set", f"r-{name}", "up")
        ip("-n", host.ns, "route", "add", "default", "via", f"{sub}.1")
        for other in self.hosts.values():
            if other is not router:
                ip("-n", other.ns, "route", "replace", f"{sub}.0/24", "via", router.address)
        self.hosts[name] = host
        return host

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
        return helpers.stop_process(proc, sig, STOP_TIMEOUT_S)

    def destroy(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)
        for ns in self.namespaces:
            # Only the lab starts processes in its namespaces (executors of its nodes).
            r = ip("netns", "pids", ns, check=False)
            for pid in r.stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        for ns in reversed(self.namespaces):
            ip("netns", "del", ns, check=False)
        self.namespaces.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    def leftovers(self) -> list[str]:
        out = ip("netns", "list", check=False).stdout
        return [line.split()[0] for line in out.splitlines()
                if line.startswith(self.prefix + "-")]


def run_private_job(lab: Lab, host_name: str, src: Path, *args: str,
                    timeout: float = 180.0, job: str = "wordcount",
                    job_files: dict[str, str] | None = None
                    ) -> subprocess.CompletedProcess[bytes]:
    """``pymr job JOB`` on a host whose input lives on a tmpfs only it can see.

    ``ip netns exec`` gives the command its own mount namespace, so the tmpfs mounted
    there is invisible to the nodes: a node could not read the split by offset even if
    the master asked it to; the job succeeds only if the bytes travel over the network.
    ``job_files`` (relative path -> source) are written to the same tmpfs, and ``job``
    names one of them there (``{private}`` is replaced by the tmpfs path): a job file and
    its helper modules that no node can read, so the job runs only if they travel too.
    """
    host = lab.hosts[host_name]
    private = Path(f"/tmp/{lab.prefix}-private-{host_name}")
    private.mkdir(exist_ok=True)
    staged = lab.dir / f"job-files-{host_name}"
    copies = ""
    if job_files:
        shutil.rmtree(staged, ignore_errors=True)
        for rel, text in job_files.items():
            (staged / rel).parent.mkdir(parents=True, exist_ok=True)
            (staged / rel).write_text(text)
        copies = f"cp -r {staged}/. {private}/ && rm -r {staged} && "
    script = (f"mount -t tmpfs -o size=512m pymr-private {private} && "
              f"cp {src} {private}/input.txt && {copies}"
              f"exec {sys.executable} -m pymr job {job.replace('{private}', str(private))} "
              f"{private}/input.txt " + " ".join(args))
    try:
        return subprocess.run(host.argv("sh", "-c", script), env=_env(), capture_output=True,
                              timeout=timeout)
    finally:
        private.rmdir()
