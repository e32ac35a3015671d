"""What a stranger on the LAN sees: a packet capture on the lab's bridge during a job.

tcpdump runs in the bridge's namespace on ``br0`` (promiscuous: it sees every frame the
bridge forwards) while the client runs ``pymr job`` on three nodes, shipping the split
bytes over the network (the input lives on a tmpfs only the client can see). The capture
is then parsed here (pcap, Ethernet, IPv4, TCP reassembly by sequence number): every TCP
stream in either direction must open with a ZMTP 3 greeting whose mechanism is CURVE, and
no plaintext of the input may appear anywhere in the capture.
"""

from __future__ import annotations

import re
import signal
import struct
import subprocess
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pymr.wordtokens import reference_count
from tests import helpers

from .lab import REPO, Lab, run_private_job

SAMPLE = REPO / "samples" / "sample.txt"
#: Words that occur in the input only, long enough never to appear in ciphertext by chance
#: (one 15-letter match in ~10^8 random bytes has a probability near 10^-28).
MARKERS = (b"quixotrixmarker", b"zyphorblastique")
ZMTP_SIGNATURE_HEAD = b"\xff"
ZMTP_SIGNATURE_TAIL = b"\x7f"



@pytest.fixture(autouse=True)
def _tcpdump() -> None:
    helpers.require_tool("tcpdump", why="the capture test runs tcpdump on the lab's bridge "
                                        "(apt-get install tcpdump)")


# ---------------------------------------------------------------- pcap parsing


@dataclass
class Stream:
    """One direction of one TCP connection, reassembled by sequence number."""

    src: str
    dst: str
    isn: int | None = None
    segments: dict[int, bytes] = field(default_factory=dict)

    def add(self, seq: int, payload: bytes, syn: bool) -> None:
        if syn:
            self.isn = seq
        if payload:
            old = self.segments.get(seq, b"")
            if len(payload) > len(old):
                self.segments[seq] = payload

    def data(self) -> bytes:
        if not self.segments:
            return b""
        base = (self.isn + 1) if self.isn is not None else min(self.segments)
        out = bytearray()
        for seq in sorted(self.segments, key=lambda s: (s - base) % (1 << 32)):
            off = (seq - base) % (1 << 32)
            chunk = self.segments[seq]
            if off > len(out):
                break            # a gap (packet lost by the capture): stop here
            out[off:off + len(chunk)] = chunk
        return bytes(out)


def read_pcap(path: Path) -> tuple[dict[tuple[str, str], Stream], int, int]:
    """(streams by (src, dst), TCP payload bytes, frames) of a pcap file (Ethernet)."""
    raw = path.read_bytes()
    magic = raw[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise AssertionError(f"not a pcap file: {magic!r}")
    linktype = struct.unpack(endian + "I", raw[20:24])[0]
    assert linktype == 1, f"link type {linktype}: expected Ethernet"
    streams: dict[tuple[str, str], Stream] = {}
    pos, payload_bytes, frames = 24, 0, 0
    while pos + 16 <= len(raw):
        incl = struct.unpack(endian + "I", raw[pos + 8:pos + 12])[0]
        frame = raw[pos + 16:pos + 16 + incl]
        pos += 16 + incl
        frames += 1
        eth_type = struct.unpack("!H", frame[12:14])[0]
        off = 14
        if eth_type == 0x8100:                       # VLAN tag
            eth_type = struct.unpack("!H", frame[16:18])[0]
            off = 18
        if eth_type != 0x0800:
            continue
        ip = frame[off:]
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack("!H", ip[2:4])[0]
        if ip[9] != 6:
            continue
        src_ip = ".".join(map(str, ip[12:16]))
        dst_ip = ".".join(map(str, ip[16:20]))
        tcp = ip[ihl:total]
        sport, dport, seq = struct.unpack("!HHI", tcp[:8])
        flags = tcp[13]
        data_off = (tcp[12] >> 4) * 4
        payload = tcp[data_off:]
        payload_bytes += len(payload)
        key = (f"{src_ip}:{sport}", f"{dst_ip}:{dport}")
        stream = streams.setdefault(key, Stream(*key))
        stream.add(seq, payload, bool(flags & 0x02))
    return streams, payload_bytes, frames


# ---------------------------------------------------------------- the capture


# The kernel's capture buffer, in KiB. The default (2 MiB) holds about thirty 64 KiB
# GSO frames of the veths: a CI run that descheduled tcpdump for a moment dropped 162 of
# 1,009 frames. 256 MiB is more than the job's whole traffic, so nothing can be dropped.
CAPTURE_BUFFER_KIB = 256 * 1024


class Capture:
    """tcpdump on the lab bridge, writing a pcap file; ``stop`` ends it (bounded)."""

    def __init__(self, lab: Lab, path: Path) -> None:
        self.path = path
        self.log = path.with_suffix(".log")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", lab.bridge_ns, "tcpdump", "-i", "br0", "-U", "-s",
                 "0", "-B", str(CAPTURE_BUFFER_KIB), "-n", "-w", str(path), "tcp"],
                stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL)
        def listening() -> bool:
            if b"listening on" in self.log.read_bytes():
                return True
            if self.proc.poll() is not None:
                raise AssertionError(f"tcpdump exited: {self.log.read_text()}")
            return False

        try:
            helpers.wait_until(listening, 20, lambda: f"tcpdump to start: "
                                                      f"{self.log.read_text()}")
        except AssertionError:
            self.stop()
            raise

    def stop(self) -> str:
        helpers.stop_process(self.proc, signal.SIGINT, 20)
        return self.log.read_text(errors="replace")


def make_marked_input(path: Path, copies: int) -> bytes:
    """The sample text, with the marker words on every line of every copy."""
    sample = SAMPLE.read_bytes().splitlines(keepends=True)
    out = bytearray()
    for i in range(copies):
        out += b"copy %d %s\n" % (i, MARKERS[i % 2])
        for j, line in enumerate(sample):
            out += MARKERS[j % 2] + b" " + line
    path.write_bytes(out)
    return bytes(out)


def test_capture_shows_only_curve_greetings_and_no_plaintext(lab: Lab) -> None:
    # Given a capture on the bridge, and 8 MiB of input marked with words found nowhere
    # else, on a private tmpfs of the client
    src = lab.dir / "capture-input.txt"
    data = make_marked_input(src, 40)
    pcap = lab.dir / "job.pcap"
    capture = Capture(lab, pcap)
    try:
        # When the client runs the job on the three nodes (bytes shipped, 128K splits)
        r = run_private_job(lab, "client", src, "--split-size", "128K")
    finally:
        tcpdump_log = capture.stop()
    assert r.returncode == 0, r.stderr.decode()
    counts = dict(line.rsplit(b"\t", 1) for line in r.stdout.splitlines())
    expected = reference_count(data)
    assert {m: int(counts[m]) for m in MARKERS} == {m: expected[m] for m in MARKERS}
    dropped = re.search(r"(\d+) packets? dropped by kernel", tcpdump_log)
    assert dropped is None or dropped.group(1) == "0", tcpdump_log
    streams, payload_bytes, frames = read_pcap(pcap)
    # Then the capture holds the job's traffic (at least every input byte went out)
    assert payload_bytes >= len(data), (payload_bytes, len(data))
    # every TCP stream that carries data opens with a ZMTP greeting naming CURVE
    mechanisms: dict[bytes, int] = defaultdict(int)
    peers = set()
    for (src_ep, dst_ep), stream in streams.items():
        body = stream.data()
        if not body:
            continue
        assert body[:1] == ZMTP_SIGNATURE_HEAD and body[9:10] == ZMTP_SIGNATURE_TAIL, \
            f"{src_ep} -> {dst_ep} does not start with a ZMTP greeting: {body[:64]!r}"
        assert body[10] == 3, f"{src_ep} -> {dst_ep}: ZMTP version {body[10]}"
        mechanism = body[12:32].rstrip(b"\x00")
        mechanisms[mechanism] += 1
        peers.add((src_ep.rsplit(":", 1)[0], dst_ep.rsplit(":", 1)[0]))
    assert set(mechanisms) == {b"CURVE"}, dict(mechanisms)
    # between every pair of members that talked: client <-> nodes and node <-> node
    hosts = {lab.hosts[n].address for n in ("client", "n1", "n2", "n3")}
    assert {a for a, _ in peers} | {b for _, b in peers} <= hosts
    node_pairs = {(a, b) for a, b in peers
                  if a != lab.hosts["client"].address and b != lab.hosts["client"].address}
    assert node_pairs, "no node-to-node (shuffle) stream was captured"
    # and no plaintext of the input (nor of the answer) crossed the wire.
    raw = pcap.read_bytes()
    for marker in MARKERS:
        assert marker not in raw, f"{marker!r} crossed the bridge in clear"
        assert not any(marker in s.data() for s in streams.values())
    print(f"capture: {frames} frames, {payload_bytes} TCP payload bytes, "
          f"{sum(mechanisms.values())} streams, all CURVE; {len(node_pairs)} node pairs")
