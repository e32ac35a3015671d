"""Long-running fuzz of ``pymr.wire.protocol.decode`` (not collected by pytest: no ``test_``
prefix).

    python tests/fuzz_protocol.py --count 1000000              # atheris if installed
    python tests/fuzz_protocol.py --engine random --seconds 60
    python tests/fuzz_protocol.py --engine atheris --count 5000000

Every input is a list of frames handed to ``decode``. The oracle:

* ``decode`` returns a ``Message`` or raises ``ProtocolError``, nothing else (no
  ``MemoryError``, ``RecursionError``, ``TypeError``, ``ValueError`` ...);
* no single input takes longer than ``--slow-ms`` (decoder bombs must be cheap);
* an accepted message re-encodes to a header that decodes to the same encoding (what a
  node accepts it can also send), and its field values have the annotated wire types.

Engines: ``atheris`` (coverage-guided libFuzzer over ``pymr.wire.protocol``, seeded with a
valid encoding of every message type and known bombs) or ``random`` (a seeded mix of
random bytes, mutated valid encodings, structured maps with real field names and random
nested values, and bomb prefixes). ``auto`` picks atheris when it imports. The summary
(inputs, rate, accepted/rejected, reasons, failures, peak RSS) goes to stdout; the exit
code is 0 only if no input broke the oracle.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import random
import resource
import sys
import time
import traceback
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import msgpack  # noqa: E402

#: msgpack's integer range: what a peer can put on the wire.
INT_MIN, INT_MAX = -(1 << 63), (1 << 64) - 1

BOMB_PREFIXES = [
    b"\xdd\xff\xff\xff\xff",            # array32 of 4G elements
    b"\xdf\xff\xff\xff\xff",            # map32 of 4G pairs
    b"\xdb\xff\xff\xff\xff",            # str32 of 4 GiB
    b"\xc6\xff\xff\xff\xff",            # bin32 of 4 GiB
    b"\xc9\xff\xff\xff\xff\x01",        # ext32 of 4 GiB
    b"\xdc\xff\xff",                    # array16 of 65535
    b"\xde\xff\xff",                    # map16 of 65535
    b"\xd6\xff\x00\x00\x00\x00",        # timestamp ext
    b"\xc1",                            # never used
]


@dataclasses.dataclass
class Stats:
    inputs: int = 0
    accepted: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    rejected: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    failures: list[tuple[str, list[bytes]]] = dataclasses.field(default_factory=list)
    slowest_ms: float = 0.0
    started: float = dataclasses.field(default_factory=time.monotonic)

    def rate(self) -> float:
        return self.inputs / max(time.monotonic() - self.started, 1e-9)


class Oracle:
    """Runs one input through ``decode`` and records what happened."""

    def __init__(self, slow_ms: float, max_failures: int = 20) -> None:
        from pymr.errors import ProtocolError
        from pymr.wire import protocol as p

        self.p = p
        self.ProtocolError = ProtocolError
        self.slow_ms = slow_ms
        self.max_failures = max_failures
        self.stats = Stats()
        self.hints = {name: typing.get_type_hints(cls) for name, cls in
                      p.message_types().items()}

    def fail(self, why: str, frames: list[bytes]) -> None:
        if len(self.stats.failures) < self.max_failures:
            self.stats.failures.append((why, [bytes(f[:4096]) for f in frames]))

    def __call__(self, frames: list[bytes]) -> None:
        p = self.p
        self.stats.inputs += 1
        t0 = time.perf_counter()
        try:
            msg, payload = p.decode(frames)
        except self.ProtocolError as exc:
            reason = str(exc)
            # group reasons: "map_task: field x has the wrong type" -> "wrong type"
            for key in ("wrong type", "missing field", "unknown message type",
                        "protocol version", "undecodable header", "nested too deeply",
                        "not a map", "too large", "empty message"):
                if key in reason:
                    reason = key
                    break
            self.stats.rejected[reason] += 1
            return
        except BaseException as exc:  # noqa: BLE001 - that is what we hunt
            if isinstance(exc, KeyboardInterrupt):
                raise
            self.fail(f"decode raised {type(exc).__name__}: {exc!r}\n"
                      f"{traceback.format_exc(limit=6)}", frames)
            return
        finally:
            ms = (time.perf_counter() - t0) * 1000
            if ms > self.stats.slowest_ms:
                self.stats.slowest_ms = ms
            if ms > self.slow_ms:
                self.fail(f"decode took {ms:.0f} ms", frames)
        self.stats.accepted[msg.TYPE] += 1
        self.check_accepted(msg, payload, frames)

    def check_accepted(self, msg: Any, payload: list[Any], frames: list[bytes]) -> None:
        p = self.p
        if not isinstance(msg, p.Message) or payload != list(frames[1:]):
            self.fail(f"decode returned {type(msg).__name__} / wrong payload", frames)
            return
        for f in dataclasses.fields(msg):
            if not wire_typed(getattr(msg, f.name), self.hints[msg.TYPE][f.name]):
                self.fail(f"{msg.TYPE}.{f.name} = {getattr(msg, f.name)!r:.80} is not "
                          f"{self.hints[msg.TYPE][f.name]}", frames)
                return
        try:
            header = p.encode(msg)[0]
            again, _ = p.decode([header])
            if p.encode(again)[0] != header:
                self.fail("accepted message does not round-trip", frames)
        except BaseException as exc:  # noqa: BLE001
            self.fail(f"re-encoding an accepted message raised {exc!r}", frames)


def wire_typed(value: Any, hint: Any) -> bool:
    """The value has the annotated type (bool is not an int; ints fit msgpack)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is bool:
        return type(value) is bool
    if hint is int:
        return type(value) is int and INT_MIN <= value <= INT_MAX
    if hint is float:
        return type(value) in (int, float) and not isinstance(value, bool)
    if hint is str:
        return type(value) is str
    if hint is bytes:
        return type(value) is bytes
    if origin is list:
        return type(value) is list and all(wire_typed(v, args[0]) for v in value)
    if origin is dict:
        return type(value) is dict and all(wire_typed(k, args[0]) and wire_typed(v, args[1])
                                           for k, v in value.items())
    if origin is typing.Union or str(origin) == "types.UnionType":
        return any(wire_typed(value, a) for a in args)
    return True


# ---------------------------------------------------------------- seeds


def sample_value(hint: Any, rng: random.Random) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is bool:
        return rng.random() < 0.5
    if hint is int:
        return rng.choice([0, 1, 7, -1, 255, 65536, INT_MAX, INT_MIN, rng.randint(-9, 99)])
    if hint is float:
        return rng.choice([0.0, 1.5, -2.25, 1e300])
    if hint is str:
        return rng.choice(["", "x", "job-1", "tcp://127.0.0.1:7372", "é" * 3])
    if hint is bytes:
        return rng.choice([b"", b"x", b"\x00\xff"])
    if origin is list:
        return [sample_value(args[0], rng) for _ in range(rng.randint(0, 3))]
    if origin is dict:
        return {sample_value(args[0], rng): sample_value(args[1], rng)
                for _ in range(rng.randint(0, 3))}
    if origin is typing.Union or str(origin) == "types.UnionType":
        return sample_value(rng.choice(args), rng)
    return None


def valid_headers(rng: random.Random, per_type: int = 3) -> list[bytes]:
    from pymr.wire import protocol as p

    out = []
    for _name, cls in sorted(p.message_types().items()):
        hints = typing.get_type_hints(cls)
        for _ in range(per_type):
            fields = {f.name: sample_value(hints[f.name], rng)
                      for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
            try:
                out.append(p.encode(cls(**fields))[0])
            except Exception:  # noqa: BLE001 - a sample the encoder rejects: skip it
                pass
    return out


# ---------------------------------------------------------------- the random engine


class RandomInputs:
    """A seeded stream of hostile inputs (lists of frames)."""

    def __init__(self, seed: int) -> None:
        from pymr.wire import protocol as p

        self.rng = random.Random(seed)
        self.p = p
        self.seeds = valid_headers(self.rng)
        self.types = sorted(p.message_types())
        self.hints = {n: typing.get_type_hints(c) for n, c in p.message_types().items()}
        self.fields = {n: [f.name for f in dataclasses.fields(c)]  # type: ignore[arg-type]
                       for n, c in p.message_types().items()}

    def random_bytes(self) -> bytes:
        rng = self.rng
        n = rng.choice([0, 1, 2, 5, 9, 16, 33, 64, 200, 1000, 2048])
        return rng.randbytes(rng.randint(0, n))

    def value(self, depth: int = 0) -> Any:
        rng = self.rng
        kind = rng.randrange(12 if depth < 12 else 7)
        if kind == 0:
            return None
        if kind == 1:
            return rng.random() < 0.5
        if kind == 2:
            return rng.choice([0, 1, -1, INT_MAX, INT_MIN, rng.randint(-1000, 1000)])
        if kind == 3:
            return rng.choice([0.0, -0.0, float("inf"), float("nan"), rng.random()])
        if kind == 4:
            return rng.choice(["", "x", "\udcff".encode("utf-8", "surrogatepass").decode(
                "utf-8", "replace"), rng.choice(self.types), "a" * rng.randint(0, 300)])
        if kind == 5:
            return rng.randbytes(rng.randint(0, 40))
        if kind == 6:
            return rng.choice(self.types)
        if kind <= 8:
            return [self.value(depth + 1) for _ in range(rng.randint(0, 4))]
        keys: list[Any] = [rng.choice(["k", "v", "t", 0, 1, -1, b"b", 2.5, None, True])
                           for _ in range(rng.randint(0, 4))]
        return {k: self.value(depth + 1) for k in keys}

    def structured(self) -> bytes:
        rng = self.rng
        name = rng.choice(self.types + ["", "nope", "ACK"])
        head: dict[Any, Any] = {}
        if rng.random() < 0.9:
            head["v"] = rng.choice([1, 1, 1, 0, 2, "1", 1.0, True])
        head["t"] = name
        for f in self.fields.get(name, []):
            r = rng.random()
            if r < 0.55:
                head[f] = sample_value(self.hints[name][f], rng)
            elif r < 0.9:
                head[f] = self.value()
        for _ in range(rng.randint(0, 2)):
            head[rng.choice(["extra", "pad", 3, b"k"])] = self.value()
        try:
            return msgpack.packb(head, use_bin_type=rng.random() < 0.9)
        except (TypeError, ValueError, OverflowError):
            return msgpack.packb({"t": name})

    def mutated(self) -> bytes:
        rng = self.rng
        frame = bytearray(rng.choice(self.seeds))
        for _ in range(rng.randint(1, 6)):
            op = rng.randrange(7)
            pos = rng.randrange(len(frame) + 1)
            if op == 0 and frame:
                frame[min(pos, len(frame) - 1)] ^= 1 << rng.randrange(8)
            elif op == 1 and frame:
                frame[min(pos, len(frame) - 1)] = rng.randrange(256)
            elif op == 2:
                del frame[pos:pos + rng.randint(1, 16)]
            elif op == 3:
                frame[pos:pos] = rng.randbytes(rng.randint(1, 8))
            elif op == 4:
                frame[pos:pos] = rng.choice(BOMB_PREFIXES)
            elif op == 5:
                del frame[pos:]
            else:
                other = rng.choice(self.seeds)
                cut = rng.randrange(len(other) + 1)
                frame[pos:] = other[cut:]
        return bytes(frame)

    def bomb(self) -> bytes:
        rng = self.rng
        r = rng.randrange(4)
        # deep nests are the expensive inputs (each level of a declared 1M-element array
        # makes msgpack allocate it): mostly shallow, now and then the full depth
        deep = 1100 if rng.random() < 0.02 else 40
        if r == 0:
            return rng.choice(BOMB_PREFIXES) + rng.randbytes(rng.randint(0, 16))
        if r == 1:
            return (rng.choice([b"\x91", b"\x81\xa1k", b"\x81\x91\x01"])
                    * rng.randint(1, deep * 20) + b"\xc0")
        if r == 2:
            prefix = msgpack.packb({"v": 1, "t": rng.choice(self.types)})
            return b"\x83" + prefix[1:] + rng.choice(BOMB_PREFIXES)
        return b"\xdd\x00\x0f\x42\x40" * rng.randint(1, deep)

    def __iter__(self) -> Any:
        rng = self.rng
        makers = [self.random_bytes] * 3 + [self.structured] * 3 + [self.mutated] * 4 \
            + [self.bomb]
        while True:
            n = rng.choice([1, 1, 1, 1, 2, 3, 0])
            frames = [rng.choice(makers)() for _ in range(max(n, 1))] if n else []
            yield frames


def run_random(oracle: Oracle, count: int, seconds: float | None, seed: int,
               progress_s: float) -> None:
    deadline = time.monotonic() + seconds if seconds else None
    next_report = time.monotonic() + progress_s
    for i, frames in enumerate(RandomInputs(seed)):
        if i >= count or (deadline and time.monotonic() > deadline):
            return
        oracle(frames)
        if progress_s and time.monotonic() >= next_report:
            next_report = time.monotonic() + progress_s
            s = oracle.stats
            print(f"... {s.inputs:,} inputs, {s.rate():,.0f}/s, "
                  f"{sum(s.accepted.values()):,} accepted, {len(s.failures)} failures",
                  flush=True)


# ---------------------------------------------------------------- the atheris engine


def run_atheris(oracle: Oracle, count: int, seconds: float | None, seed: int,
                report: Any) -> None:
    import shutil
    import tempfile

    import atheris

    corpus = tempfile.mkdtemp(prefix="pymr-fuzz-corpus-")
    rng = random.Random(seed)
    for i, seed_frame in enumerate(valid_headers(rng) + BOMB_PREFIXES):
        Path(corpus, f"seed-{i}").write_bytes(b"\x00" + seed_frame)
        Path(corpus, f"near-{i}").write_bytes(bytes([4, i % 256, 0]))
    deadline = time.monotonic() + seconds if seconds else None

    seeds = valid_headers(random.Random(seed))

    def one_input(data: bytes) -> None:
        # first byte: the shape. 0-3: raw frames (1..4 of them, cut at the halves);
        # 4-7: a valid header of some type with the rest XOR-ed over it at an offset
        # (near-valid headers: the type checks, not just the msgpack parser)
        if not data:
            oracle([])
        elif data[0] % 8 < 4:
            n = 1 + data[0] % 4
            body = data[1:]
            cuts = sorted({len(body) * i // n for i in range(1, n)})
            frames = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
            oracle(frames)
        else:
            base = bytearray(seeds[(data[1] if len(data) > 1 else 0) % len(seeds)])
            at = (data[2] if len(data) > 2 else 0) % (len(base) + 1)
            for i, b in enumerate(data[3:]):
                if at + i < len(base):
                    base[at + i] ^= b
                else:
                    base.append(b)
            oracle([bytes(base)])
        if oracle.stats.failures:
            finish(1)
        if oracle.stats.inputs >= count or (deadline and time.monotonic() > deadline):
            finish(0)

    def finish(code: int) -> None:
        report()
        shutil.rmtree(corpus, ignore_errors=True)
        sys.stdout.flush()
        os._exit(code)

    # libFuzzer exits the process itself; the summary is printed from one_input first.
    atheris.Setup([sys.argv[0], corpus, f"-seed={seed}", f"-runs={count + 10}",
                   "-max_len=4096", "-rss_limit_mb=4096", "-print_final_stats=0"],
                  one_input)
    atheris.Fuzz()


# ---------------------------------------------------------------- main


def summary(oracle: Oracle, engine: str) -> str:
    s = oracle.stats
    elapsed = time.monotonic() - s.started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines = [
        f"engine {engine}: {s.inputs:,} inputs in {elapsed:.1f} s "
        f"({s.rate():,.0f} inputs/s), peak RSS {peak_mib:.0f} MiB, slowest input "
        f"{s.slowest_ms:.1f} ms",
        f"accepted {sum(s.accepted.values()):,} ({len(s.accepted)} message types): "
        + ", ".join(f"{k} {v:,}" for k, v in s.accepted.most_common(8)),
        f"rejected {sum(s.rejected.values()):,}: "
        + ", ".join(f"{k} {v:,}" for k, v in s.rejected.most_common()),
        f"failures: {len(s.failures)}",
    ]
    for why, frames in s.failures:
        lines.append(f"  FAIL {why}\n    frames {frames!r:.400}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="inputs to run")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long")
    parser.add_argument("--engine", choices=("auto", "atheris", "random"), default="auto")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--slow-ms", type=float, default=1000.0,
                        help="an input slower than this is a failure (default 1000)")
    parser.add_argument("--progress", type=float, default=10.0,
                        help="seconds between progress lines (random engine; 0: none)")
    args = parser.parse_args(argv)
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401
            engine = "atheris"
        except ImportError:
            engine = "random"
    if engine == "atheris":
        import atheris

        # instrument pymr.wire.protocol for coverage before anything imports it
        with atheris.instrument_imports(include=["pymr"]):
            import pymr.wire.protocol  # noqa: F401
    oracle = Oracle(args.slow_ms)

    def report() -> None:
        print(summary(oracle, engine), flush=True)

    if engine == "atheris":
        run_atheris(oracle, args.count, args.seconds, args.seed, report)
    else:
        run_random(oracle, args.count, args.seconds, args.seed, args.progress)
    report()
    return 1 if oracle.stats.failures else 0


if __name__ == "__main__":
    sys.exit(main())
