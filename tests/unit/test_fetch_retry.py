"""pymr.engine.fetch.PartitionStreams: a window whose reply is lost is asked for again after a
silence, with a growing wait; late and repeated chunks are dropped by their sequence number.
A fake reducer answers requests from a table, and can lose a reply; the clock is the test's."""

from __future__ import annotations

from typing import Any

from pymr.engine.fetch import FETCH_RETRY_MAX_S, FETCH_RETRY_S, PartitionStreams

#: the partition's sorted chunks ([keys, values])
CHUNKS: list[tuple[list[Any], list[Any]]] = [(["a"], [1]), (["b"], [2]), (["c"], [3]),
                                             (["d"], [4]), (["e"], [5])]


class FakeReducer:
    """Answers each FetchPartition at the next pump, unless told to lose the next replies."""

    def __init__(self, lose: int = 0) -> None:
        self.lose = lose            # replies (whole windows) to lose
        self.asked: list[tuple[int, int]] = []   # (start, count) of every request
        self.pending: list[tuple[int, int]] = []
        self.clock = 0.0
        self.streams = PartitionStreams(2, self.request, self.pump, lambda part: len(CHUNKS),
                                        lambda: self.clock)

    def request(self, part: int, start: int, count: int, lines: bool) -> None:
        self.asked.append((start, count))
        if self.lose:
            self.lose -= 1
        else:
            self.pending.append((start, count))

    def pump(self) -> None:
        """One turn of the master's loop: 100 ms pass, then the replies sent arrive."""
        self.clock += 0.1
        pending, self.pending = self.pending, []
        for start, count in pending:
            for seq in range(start, start + count):
                self.streams.on_data(0, seq, seq == len(CHUNKS) - 1, CHUNKS[seq])


def test_a_lost_reply_is_asked_for_again_after_the_silence() -> None:
    # Given a reducer that loses the reply to the first window,
    r = FakeReducer(lose=1)
    r.streams.open(0)
    # when the partition is read,
    got = list(r.streams.stream(0))
    # then every record comes once, in order,
    assert got == [("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5)]
    # the first window was asked for again (from chunk 0) once the silence lasted
    # FETCH_RETRY_S, and not before,
    assert r.asked[:2] == [(0, 2), (0, 2)]
    assert r.streams.asked_again == 1
    assert r.clock >= FETCH_RETRY_S


def test_a_window_that_arrives_is_never_asked_for_again() -> None:
    r = FakeReducer()
    r.streams.open(0)
    assert [k for k, _ in r.streams.stream(0)] == ["a", "b", "c", "d", "e"]
    assert r.streams.asked_again == 0
    assert [start for start, _ in r.asked] == sorted({start for start, _ in r.asked})


def test_the_wait_doubles_while_nothing_comes_and_is_capped() -> None:
    # Given a reducer that loses the next six replies,
    r = FakeReducer(lose=6)
    r.streams.open(0)
    asked_at: list[float] = []
    request = r.request

    def timed(part: int, start: int, count: int, lines: bool) -> None:
        asked_at.append(r.clock)
        request(part, start, count, lines)

    r.streams._request_cb = timed
    # when the partition is read,
    assert len(list(r.streams.stream(0))) == len(CHUNKS)
    # then the asks without progress came after 10, 20, 40, 80, 160, 160 s of silence,
    gaps = [round(b - a) for a, b in zip(asked_at, asked_at[1:], strict=False)][:6]
    assert gaps == [10, 20, 40, 80, 160, 160]
    assert FETCH_RETRY_MAX_S == 160
    assert r.streams.asked_again == 6


def test_late_chunks_after_an_ask_again_are_dropped_as_duplicates() -> None:
    # Given a window asked for again while its first reply was only late,
    r = FakeReducer()
    s = r.streams
    s.open(0)
    s._maybe_request(0)                     # (0, 2) sent, its reply held back
    held, r.pending = r.pending, []
    r.clock = FETCH_RETRY_S
    s._ask_again_if_silent(0)               # (0, 2) again
    assert r.asked == [(0, 2), (0, 2)]
    # when both replies arrive,
    r.pump()
    r.pending = held
    r.pump()
    # then each chunk is taken once.
    assert s.received[0] == 2
    assert [k for keys, _ in s.buffers[0] for k in keys] == ["a", "b"]
