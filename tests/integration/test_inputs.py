"""Input files that fight back: every kind of bad input that tests/integration/
test_cli.py does not already cover, plus the output-side rows (disk full, devices).

Already covered elsewhere (not repeated here): a missing path, a binary file named
explicitly (and ``--binary``), a binary file and a symlink inside a directory, .gz and
.bz2, a corrupt .gz, invalid UTF-8 with its warning, an existing output without
``--force``, a missing output directory (test_cli.py); Ctrl-C (test_engine.py).

Most cases call ``pymr.cli.main.main`` in this process (each run still starts a real embedded
cluster); the permission cases and the 200 MiB line run ``python -m pymr`` as a real
process. No case may print a Python traceback (nothing here passes ``--debug``).
"""

from __future__ import annotations

import io
import lzma
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pymr.cli import main as cli
from pymr.wordtokens import count_bad_sequences, reference_count
from tests import helpers

SMALL = ["--local", "1", "--slots", "1"]
SPREAD = ["--local", "2", "--slots", "1", "--split-size", "4K", "--partitions", "3"]
IS_ROOT = os.geteuid() == 0


def run(capsysbinary: pytest.CaptureFixture[bytes], *argv: str | Path
        ) -> tuple[int, bytes, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsysbinary.readouterr()
    text = err.decode("utf-8", "replace")
    assert "Traceback" not in text, text
    return code, out, text


def leftovers(directory: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


# ================================================================== what is not a file


@pytest.fixture
def unix_socket(tmp_path: Path):
    path = tmp_path / "a.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    yield path
    s.close()


@pytest.mark.parametrize("what", ["socket", "char device", "dangling symlink"])
def test_not_a_regular_file_is_one_line_naming_it(capsysbinary, tmp_path: Path, what: str,
                                                  request: pytest.FixtureRequest) -> None:
    if what == "socket":
        path, reason = request.getfixturevalue("unix_socket"), "socket"
    elif what == "char device":
        path, reason = Path("/dev/null"), "device"
    else:
        path, reason = tmp_path / "gone.txt", "no such file"
        os.symlink(tmp_path / "nowhere.txt", path)
    # When it is named as an input, then exit 2 and one line naming it and why
    code, out, err = run(capsysbinary, "job", "wordcount", path, *SMALL)
    assert code == 2 and out == b""
    line = helpers.one_error_line(err)
    assert str(path) in line and reason in line, line


@pytest.mark.parametrize("encoding,name", [("utf-16", "UTF-16"), ("utf-16-be", None),
                                           ("utf-32", "UTF-32")])
def test_utf16_and_utf32_text_is_named_with_the_fix(capsysbinary, tmp_path: Path,
                                                    encoding: str, name: str | None) -> None:
    # Given text saved as UTF-16 or UTF-32 (NUL bytes everywhere), with a byte-order mark
    # (Python writes one for "utf-16" and "utf-32", none for "utf-16-be")
    path = tmp_path / "notes.txt"
    path.write_bytes("caf\u00e9 na\u00efve caf\u00e9\n".encode(encoding) * 50)
    # When it is named as an input
    code, out, err = run(capsysbinary, "job", "wordcount", path, *SMALL)
    # Then one line: the encoding and how to convert it, or "binary" without a mark
    assert code == 2 and out == b""
    line = helpers.one_error_line(err)
    if name is None:
        assert "looks binary" in line, line
    else:
        assert f"is {name} text" in line and f"iconv -f {name} -t UTF-8" in line, line


def _write_into(fifo: Path, data: bytes) -> threading.Thread:
    """The other end of a named pipe: what `<(command)` gives the shell's child."""
    def write() -> None:
        with open(fifo, "wb") as f:
            f.write(data)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    return writer


def test_a_named_pipe_is_read_once_like_stdin(capsysbinary, tmp_path: Path,
                                              private_tmp: Path) -> None:
    # Given a named pipe (as `pymr job wordcount <(zcat a.gz)` passes /dev/fd/63) and a file
    data = b"alpha beta\ngamma alpha\n" * 3000
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    other = tmp_path / "b.txt"
    other.write_bytes(b"alpha delta\n")
    writer = _write_into(fifo, data)
    # When both are the input
    code, out, err = run(capsysbinary, "job", "wordcount", fifo, other, *SPREAD, "-q")
    writer.join(10)
    # Then the pipe's text counts like a file's, and its private copy is gone
    assert code == 0, err
    assert out == helpers.wordcount_tsv(data, b"alpha delta\n")
    assert os.listdir(private_tmp) == []


@pytest.mark.parametrize("source", ["pipe", "stdin"])
def test_binary_from_a_pipe_or_stdin_is_refused_unless_binary(
        capsysbinary, tmp_path: Path, private_tmp: Path, monkeypatch: pytest.MonkeyPatch,
        source: str) -> None:
    # Given binary data (NUL bytes near the start) coming through a pipe or stdin
    data = b"\x00\x01ELF\x00" * 100 + b" word word\n"

    def run_with(*extra: str) -> tuple[int, bytes, str]:
        if source == "stdin":
            monkeypatch.setattr(sys, "stdin", helpers.StdinLike(io.BytesIO(data)))
            return run(capsysbinary, "job", "wordcount", "-", *SMALL, *extra)
        fifo = tmp_path / "bin.fifo"
        if not fifo.exists():
            os.mkfifo(fifo)
        writer = _write_into(fifo, data)
        try:
            return run(capsysbinary, "job", "wordcount", fifo, *SMALL, *extra)
        finally:
            writer.join(10)

    # Then it is refused as a named binary file is, and no copy is left
    code, out, err = run_with()
    assert code == 2 and out == b""
    assert "looks binary" in helpers.one_error_line(err) and "--binary" in err
    assert os.listdir(private_tmp) == []
    # and counted with --binary
    code, out, err = run_with("--binary", "-q")
    assert code == 0, err
    assert b"word\t2\n" in out
    assert os.listdir(private_tmp) == []


def test_a_file_name_that_is_not_utf8_is_counted(capsysbinary, tmp_path: Path) -> None:
    # Given a file whose name is Latin-1 bytes (a copy from an old disk), and a plain one
    odd = os.fsdecode(os.fsencode(str(tmp_path)) + b"/caf\xe9.txt")
    Path(odd).write_bytes(b"alpha beta alpha\n" * 500)
    plain = tmp_path / "plain.txt"
    plain.write_bytes(b"beta gamma\n")
    # When both are counted on the embedded nodes (which read local files by path)
    code, out, err = run(capsysbinary, "job", "wordcount", odd, plain, *SPREAD, "-q")
    # Then the answer is right (the odd name cannot travel as a msgpack string: its splits
    # travel as bytes)
    assert code == 0, err
    assert out == helpers.wordcount_tsv(b"alpha beta alpha\n" * 500, b"beta gamma\n")


def test_hidden_entries_of_a_directory_are_skipped_unless_named(
        capsysbinary, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Given a project directory with text, a .git folder and a dot file
    root = tmp_path / "proj"
    (root / "src").mkdir(parents=True)
    (root / ".git" / "objects").mkdir(parents=True)
    (root / "src" / "a.txt").write_bytes(b"alpha beta\n")
    (root / ".git" / "objects" / "x").write_bytes(b"gitword gitword\n")
    (root / ".notes").write_bytes(b"dotword\n")
    # When the directory is the input, then only the visible text counts, with one warning
    # (without -q: with it, no warning for the hidden entries, which follow a rule)
    code, out, _ = run(capsysbinary, "job", "wordcount", root, *SMALL)
    assert code == 0 and out == b"alpha\t1\nbeta\t1\n"
    warned = [r.getMessage() for r in caplog.records if "hidden" in r.getMessage()]
    assert len(warned) == 1 and "2 hidden" in warned[0], warned
    # and a hidden file named explicitly is counted
    code, out, _ = run(capsysbinary, "job", "wordcount", root, root / ".notes", *SMALL, "-q")
    assert code == 0 and out == b"alpha\t1\nbeta\t1\ndotword\t1\n"


def test_devices_sockets_and_fifos_inside_a_directory_are_skipped(
        capsysbinary, tmp_path: Path, unix_socket: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    # Given a directory with a text file, a socket and a fifo (a fifo read would block)
    root = unix_socket.parent
    text = root / "a.txt"
    text.write_bytes(b"alpha beta alpha\n")
    os.mkfifo(root / "b.fifo")
    # When the directory is the input, then only the text file is counted, and each
    # entry skipped is named (with -q: one line with their count)
    code, out, _ = run(capsysbinary, "job", "wordcount", root, *SMALL)
    assert code == 0 and out == b"alpha\t2\nbeta\t1\n"
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "a.sock" in warned and "b.fifo" in warned


# ================================================================== permission denied


def _no_dac_argv() -> list[str] | None:
    """Run a command as root without the capabilities that bypass file permissions."""
    if not IS_ROOT or shutil.which("setpriv") is None:
        return None
    probe = subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search",
                            "true"], capture_output=True)
    if probe.returncode != 0:
        return None
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


NO_DAC = _no_dac_argv()


@pytest.fixture
def needs_no_dac() -> None:
    """Permission bits must bind: not root, or root able to drop CAP_DAC_OVERRIDE."""
    if NO_DAC is None and IS_ROOT:
        helpers.missing_tool("setpriv", "as root, permission bits are bypassed, and "
                             "'setpriv --bounding-set' (to drop CAP_DAC_OVERRIDE) does not "
                             "work here (util-linux)")


def run_unprivileged(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """``python -m pymr ARGS`` unable to bypass permission bits (root without DAC caps)."""
    argv = [sys.executable, "-m", "pymr", *map(str, args)]
    return subprocess.run((NO_DAC or []) + argv, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, env=helpers.subprocess_env(),
                          timeout=120)


@pytest.fixture
def locked(tmp_path: Path):
    """A mode-000 file, a mode-000 directory with a file in it, and a readable file."""
    root = tmp_path / "perm"
    root.mkdir()
    (root / "ok.txt").write_bytes(b"open words here\n")
    f = root / "f000.txt"
    f.write_bytes(b"secret words\n")
    d = root / "locked"
    d.mkdir()
    (d / "inside.txt").write_bytes(b"hidden words\n")
    os.chmod(f, 0)
    os.chmod(d, 0)
    yield root
    os.chmod(d, 0o700)
    os.chmod(f, 0o600)


@pytest.mark.usefixtures("needs_no_dac")
@pytest.mark.parametrize("which", ["f000.txt", "locked/inside.txt", "locked"])
def test_permission_denied_is_exit_2_naming_the_path(locked: Path, which: str) -> None:
    # Given an input this user may not read (a mode-000 file, a file in a mode-000
    # directory, a mode-000 directory), when it is named explicitly
    path = locked / which
    r = run_unprivileged("job", "wordcount", path, *SMALL)
    # Then exit 2, one line naming the path and the reason, no traceback, no output
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == 2, f"exit {r.returncode}: {r.stderr}{r.stdout[:200]}"
    line = helpers.one_error_line(r.stderr)
    assert str(path) in line and "permission denied" in line, line
    assert r.stdout == ""


@pytest.mark.usefixtures("needs_no_dac")
def test_unreadable_entries_inside_a_directory_are_skipped_by_name(locked: Path) -> None:
    # Given a directory holding a readable file, a mode-000 file and a mode-000 directory
    r = run_unprivileged("job", "wordcount", locked, *SMALL)
    # Then the readable file is counted, and each unreadable entry is named in a warning
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == 0, r.stderr
    assert r.stdout == "here\t1\nopen\t1\nwords\t1\n"
    assert "f000.txt" in r.stderr, r.stderr
    assert str(locked / "locked") in r.stderr, \
        f"a directory that cannot be read is skipped without a word: {r.stderr!r}"


# ================================================================== empty inputs


def test_empty_file_and_empty_directory_say_there_are_no_words(
        capsysbinary, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    d = tmp_path / "emptydir"
    d.mkdir()
    (d / "sub").mkdir()
    for path in (empty, d):
        code, out, err = run(capsysbinary, "job", "wordcount", path, *SMALL)
        assert code == 0, err
        assert out == b""
        assert "no records" in err, err
    # (in this process warnings go to the log capture, not to stderr)
    warned = [r.getMessage() for r in caplog.records]
    assert any(str(d) in w and "no readable text files" in w for w in warned), warned


# ================================================================== the word rule


SPECIAL = (
    "Hello\r\nworld\r\n"                      # CRLF line ends
    "page\fbreak\vtab\tend\n"                 # form feed, vertical tab, tab
    "no\u00a0break\u00a0space\n"              # NBSP: not a word character, not ASCII space
    "thumbs\U0001F44D\U0001F3FDup emoji\U0001F600word \U0001F468\u200d\U0001F469 x\n"
    "cafe\u0301 caf\u00e9 CAFE\u0301\n"        # NFD (combining acute) and NFC
    "n\u0303o Zo\u00eb \u0130stanbul \u00c5ngstr\u00f6m\n"
    "\u039f\u0394\u03a5\u03a3\u03a3\u0395\u03a5\u03a3 don't it\u2019s\n"  # final sigma, apostrophes
    "\ufeffbom \u2028line\u2029para tab\x85nel\n"
)


def test_crlf_form_feeds_nbsp_emoji_and_combining_marks_follow_the_rule(
        capsysbinary, tmp_path: Path) -> None:
    # Given text with every kind of separator and mark, repeated over many small splits
    data = SPECIAL.encode() * 300
    path = tmp_path / "special.txt"
    path.write_bytes(data)
    for tokenizer in ("words", "whitespace"):
        code, out, err = run(capsysbinary, "job", "wordcount", path, *SPREAD,
                             "--tokenizer", tokenizer, "-q")
        # Then the answer is the reference rule's
        assert code == 0, err
        assert out == helpers.wordcount_tsv(data, tokenizer=tokenizer), tokenizer
    # and, spelled out for the documented word rule (lower-case, \w+ with inner
    # apostrophes, no normalisation):
    code, out, _ = run(capsysbinary, "job", "wordcount", path, *SPREAD, "-q")
    counts = {w.decode(): int(c) // 300 for w, c in
              (line.split(b"\t") for line in out.splitlines())}
    expected = {
        "hello": 1, "world": 1,                        # CR is not part of a word
        "page": 1, "break": 2, "tab": 2, "end": 1,     # \f \v \t separate
        "no": 1, "space": 1,                           # NBSP separates
        "thumbs": 1, "up": 1, "emoji": 1, "word": 1, "x": 1,   # emoji separate
        "cafe": 2, "café": 1,                          # a combining mark is not \w
        "n": 1, "o": 1, "zoë": 1,
        "i": 1, "stanbul": 1,                          # İ lowers to i + U+0307
        "ångström": 1,
        "οδυσσευς": 1,                                 # final sigma from the context
        "don't": 1, "it’s": 1,
        "bom": 1, "line": 1, "para": 1, "nel": 1,
    }
    assert counts == expected
    whitespace = dict(line.split(b"\t") for line in run(
        capsysbinary, "job", "wordcount", path, *SMALL, "--tokenizer", "whitespace",
        "-q")[1].splitlines())
    assert b"no\xc2\xa0break\xc2\xa0space" in whitespace      # NBSP is not ASCII whitespace
    assert b"Hello" in whitespace and b"page" in whitespace    # \r\n and \f are


def test_invalid_utf8_in_a_directory_of_files_warns_once_with_the_total(
        capsysbinary, tmp_path: Path) -> None:
    # Given two files with invalid UTF-8 (one of them cut in the middle of a sequence)
    a = tmp_path / "d" / "a.txt"
    b = tmp_path / "d" / "b.txt"
    a.parent.mkdir()
    a.write_bytes(b"caf\xe9 ok \xff\xfe end " * 500 + b"tail \xe2\x82")
    b.write_bytes(b"\x80start na\xefve\n" * 700)
    code, out, err = run(capsysbinary, "job", "wordcount", a.parent, *SPREAD)
    assert code == 0, err
    assert out == helpers.wordcount_tsv(a.read_bytes(), b.read_bytes())
    bad = count_bad_sequences(a.read_bytes()) + count_bad_sequences(b.read_bytes())
    warnings = [x for x in err.splitlines() if "invalid UTF-8" in x]
    assert len(warnings) == 1 and f"{bad} byte sequence" in warnings[0], err


# ================================================================== a 200 MiB line


BIG_BLOCK = "alpha beta gamma d\u00e9lta epsilon zeta\u00a0eta theta iota kappa ".encode()
BIG_BYTES = 200 << 20
#: The master holds no split of a plain file (local nodes read by offset) and cuts splits
#: by seeking: its RSS stays near its start-up size, far below the 200 MiB line.
MASTER_RSS_LIMIT_MIB = 128


def sample_peak_rss(proc: subprocess.Popen[bytes], stop: threading.Event) -> list[int]:
    peak = [0]

    def loop() -> None:
        while not stop.is_set() and proc.poll() is None:
            try:
                peak[0] = max(peak[0], helpers.rss_kib(proc.pid))
            except (OSError, AssertionError):
                return
            stop.wait(0.02)   # a sampling period

    threading.Thread(target=loop, name="rss-sampler", daemon=True).start()
    return peak


@pytest.mark.parametrize("suffix", ["", pytest.param(".gz", marks=pytest.mark.slow)])
def test_a_200_mib_line_without_newline_is_counted_in_several_splits(
        tmp_path: Path, suffix: str) -> None:
    # Given one 200 MiB line (no newline anywhere) of known words
    n = BIG_BYTES // len(BIG_BLOCK)
    path = tmp_path / f"line.txt{suffix}"
    if suffix:
        import gzip
        with gzip.open(path, "wb", compresslevel=1) as f:
            for _ in range(8):
                f.write(BIG_BLOCK * (n // 8))
        n = n // 8 * 8
    else:
        with open(path, "wb") as f:
            f.write(BIG_BLOCK * n)
    target = tmp_path / "counts.tsv"
    # When `pymr job` (a real process) counts it with 16 MiB splits
    stop = threading.Event()
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pymr", "job", "wordcount", str(path), "--split-size", "16M",
         "--local", "2", "--slots", "1", "-o", str(target)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=helpers.subprocess_env())
    peak = sample_peak_rss(proc, stop)
    try:
        out, err = proc.communicate(timeout=180)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    elapsed = time.monotonic() - started
    text = err.decode("utf-8", "replace")
    # Then every word is counted exactly, in several splits
    assert proc.returncode == 0, text
    assert "Traceback" not in text
    expected = {w: n for w in reference_count(BIG_BLOCK)}
    assert target.read_bytes() == helpers.expected_tsv(expected)
    splits = int(text.split(" splits")[0].rsplit(";", 1)[1].strip().replace(",", ""))
    assert splits >= BIG_BYTES // (16 << 20), text
    # with the master's memory bounded
    peak_mib = peak[0] / 1024
    print(f"200 MiB line{suffix}: {splits} splits, {elapsed:.1f} s, master peak RSS "
          f"{peak_mib:.0f} MiB")
    limit = MASTER_RSS_LIMIT_MIB if not suffix else 256   # streamed: splits in flight
    assert 0 < peak_mib < limit, f"master peak RSS {peak_mib:.0f} MiB"


# ================================================================== compressed inputs


def test_xz_and_mixed_compressed_inputs(capsysbinary, tmp_path: Path) -> None:
    import bz2
    import gzip

    data = [helpers.generate_text(tmp_path / f"t{i}.txt", 32 << 10, seed=60 + i).read_bytes()
            for i in range(3)]
    d = tmp_path / "packed"
    d.mkdir()
    (d / "a.txt.xz").write_bytes(lzma.compress(data[0]))
    (d / "b.txt.gz").write_bytes(gzip.compress(data[1]))
    (d / "c.txt.BZ2").write_bytes(bz2.compress(data[2]))
    code, out, err = run(capsysbinary, "job", "wordcount", d / "a.txt.xz", *SPREAD, "-q")
    assert code == 0, err
    assert out == helpers.wordcount_tsv(data[0])
    code, out, err = run(capsysbinary, "job", "wordcount", d, *SPREAD, "-q")
    assert code == 0, err
    assert out == helpers.wordcount_tsv(*data)


@pytest.mark.parametrize("name,content", [
    ("bad.xz", b"not xz at all"),
    ("cut.xz", lzma.compress(b"hello world\n" * 5000)[:-30]),
    ("bad.bz2", b"BZh9 not really"),
    ("empty.gz", b""),
])
def test_damaged_compressed_input_is_one_line(capsysbinary, tmp_path: Path, name: str,
                                              content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    code, out, err = run(capsysbinary, "job", "wordcount", path, *SMALL, "-q")
    if not content:
        assert code == 0 and out == b""   # an empty file is empty, whatever its name
        return
    assert code in (1, 2), err
    assert str(path) in helpers.one_error_line(err)
    assert out == b""


# ================================================================== symlinks


def test_symlinks_named_explicitly_are_followed(capsysbinary, tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "a.txt").write_bytes(b"one two two\n")
    link_file = tmp_path / "link.txt"
    link_dir = tmp_path / "linkdir"
    os.symlink(real / "a.txt", link_file)
    os.symlink(real, link_dir)
    for path in (link_file, link_dir):
        code, out, err = run(capsysbinary, "job", "wordcount", path, *SMALL, "-q")
        assert code == 0, err
        assert out == b"two\t2\none\t1\n", path


# ================================================================== inputs that change


@pytest.mark.parametrize("change", ["append", "truncate", "touch"])
def test_input_changed_while_the_job_reads_it(capsysbinary, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              change: str) -> None:
    # Given a job whose input is changed by another writer while the maps run (right
    # after the master has planned the last split)
    from pymr.runtime.mapdispatch import MapDispatch

    path = helpers.generate_text(tmp_path / "in.txt", 256 << 10, seed=61)
    target = tmp_path / "out.tsv"
    real = MapDispatch._input_complete

    def writer_strikes(self: MapDispatch) -> None:
        if change == "append":
            with open(path, "ab") as f:
                f.write(b"late words\n")
        elif change == "truncate":
            with open(path, "r+b") as f:
                f.truncate(1000)
        else:
            st = path.stat()
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        real(self)

    monkeypatch.setattr(MapDispatch, "_input_complete", writer_strikes)
    code, out, err = run(capsysbinary, "job", "wordcount", path, "--local", "1", "--slots",
                         "1", "--split-size", "16K", "-o", target)
    # Then exit 1 with one line that says so, and no output file
    assert code == 1, err
    errors = [x for x in err.splitlines() if x.startswith("pymr: error:")]
    assert len(errors) == 1 and "input changed while reading" in errors[0], err
    assert str(path) in errors[0]
    assert not target.exists() and leftovers(tmp_path, {"in.txt"}) == []


# ================================================================== output


@pytest.fixture
def small_fs(tmp_path: Path):
    """A 64 KiB tmpfs (root only), unmounted afterwards."""
    with helpers.tmpfs(tmp_path / "full", "size=64k,mode=0755", "pymr-test-full") as mnt:
        yield mnt


def test_disk_full_on_output_is_exit_1_and_leaves_nothing(capsysbinary, tmp_path: Path,
                                                          small_fs: Path) -> None:
    # Given an answer of ~300 KiB and an output directory with 64 KiB of room
    text = helpers.generate_text(tmp_path / "in.txt", 400 << 10, seed=62)
    target = small_fs / "counts.tsv"
    # When the job writes it there
    code, out, err = run(capsysbinary, "job", "wordcount", text, *SMALL, "-o", target, "-q")
    # Then exit 1, one line naming the file and the reason, and no partial or temp file
    assert code == 1, err
    line = helpers.one_error_line(err)
    assert str(target) in line and "No space left" in line, line
    assert list(small_fs.iterdir()) == []
    # and a file that was there before is untouched by a failed --force run
    (small_fs / "old.tsv").write_bytes(b"precious\n")
    code, _, err = run(capsysbinary, "job", "wordcount", text, *SMALL, "-o",
                       small_fs / "old.tsv", "--force", "-q")
    assert code == 1
    assert (small_fs / "old.tsv").read_bytes() == b"precious\n"
    assert leftovers(small_fs, {"old.tsv"}) == []


def test_output_onto_a_device_never_replaces_it(capsysbinary, tmp_path: Path) -> None:
    """``-o /dev/null --force`` (or a symlink to a device) must not turn the device node
    into a regular file: refuse it, or write through it. Tried on a private device node."""
    if not IS_ROOT:
        helpers.missing_tool("mknod", "making a device node needs root")
    dev = tmp_path / "null"
    os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    link = tmp_path / "out-link"
    os.symlink(dev, link)
    text = tmp_path / "in.txt"
    text.write_bytes(b"one two two\n")
    for target in (dev, link):
        code = cli.main(["job", "wordcount", str(text), *SMALL, "-o", str(target), "--force",
                         "-q"])
        err = capsysbinary.readouterr().err
        assert b"Traceback" not in err
        assert stat.S_ISCHR(dev.stat().st_mode), \
            f"-o {target} --force replaced the device with a regular file (exit {code})"
        assert link.is_symlink(), f"-o {target} --force replaced the symlink"
        assert code in (0, 2), err


# ================================================================== Ctrl-C on LAN-style nodes


def test_ctrl_c_cancels_the_job_on_persistent_nodes_and_frees_their_slots(
        tmp_path: Path) -> None:
    """test_engine.py covers Ctrl-C with the embedded cluster (whose nodes simply exit);
    here the nodes outlive the job, as LAN nodes do: they must drop it and free slots."""
    import signal

    import zmq

    from pymr.runtime.cluster import LocalCluster
    from pymr.runtime.state import open_state
    from tests.integration.test_security import PACED_JOB, Member, view_nodes

    gate = tmp_path / "gate"
    gate.write_bytes(b"")
    job_file = tmp_path / "paced_job.py"
    job_file.write_text(PACED_JOB.format(gate=str(gate), pace=0.2))
    text = helpers.generate_text(tmp_path / "in.txt", 1 << 20, seed=63)
    target = tmp_path / "out" / "counts.tsv"
    target.parent.mkdir()
    home = tmp_path / "home"
    ctx = zmq.Context()
    try:
        with LocalCluster(nodes=2, slots=1) as cluster:
            open_state(home).save_key(cluster.key)
            member = Member(ctx, cluster.key)
            nodes = view_nodes(cluster, member)
            nodes_arg = ",".join(n.control.removeprefix("tcp://") for n in nodes)
            # Given `pymr job` (a real process) running a paced job on two persistent nodes
            proc = subprocess.Popen(
                [sys.executable, "-c", helpers.CLI_WITH_JOB, str(job_file), "job", "wordcount",
                 str(text), "--nodes", nodes_arg, "--home", str(home), "--split-size", "16K",
                 "-o", str(target)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=helpers.subprocess_env())
            try:
                running = helpers.wait_until(lambda: all(
                    (st := member.status(n.control)) is not None and st.jobs and st.busy
                    for n in nodes), 60)
                assert running, "the job never ran on both nodes"
                assert proc.poll() is None
                # When the user presses Ctrl-C
                proc.send_signal(signal.SIGINT)
                out, err = proc.communicate(timeout=60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
            text_err = err.decode("utf-8", "replace")
            # Then exit 130, one line, no output and no temp file
            assert proc.returncode == 130, text_err
            assert "interrupted" in text_err and "Traceback" not in text_err
            assert list(target.parent.iterdir()) == []
            # and every node dropped the job and freed its slots (while the gate still
            # paces anything that would keep running)
            def idle() -> bool:
                sts = [member.status(n.control) for n in nodes]
                return all(st is not None and not st.jobs and st.busy == 0 for st in sts)

            assert helpers.wait_until(idle, 10), [member.status(n.control) for n in nodes]
            member.close()
    finally:
        ctx.destroy(linger=0)


def test_a_small_input_is_cut_so_that_every_slot_gets_splits(tmp_path: Path) -> None:
    import pymr

    # Given 4 MiB of text: one 16 MiB split would leave one of two slots idle
    path = tmp_path / "four.txt"
    line = b"alpha beta gamma delta\n"
    path.write_bytes(line * ((4 << 20) // len(line)))
    # When it runs with the default split size, and under a 16 MiB budget
    free = pymr.run("wordcount", str(path), local=1, slots=2)
    tight = pymr.run("wordcount", str(path), local=1, slots=2, memory=16 << 20)
    # Then it is cut into 1 MiB splits (the smallest automatic split), and under the
    # budget into splits of a 32nd of an executor's share (8 MiB / 32 = 256 KiB); a split
    # ends at the first separator after its size, so the last one may be a sliver
    assert free.summary.tasks in (4, 5) and tight.summary.tasks in (16, 17)
    assert list(free) == list(tight) and dict(free)[b"alpha"] == (4 << 20) // len(line)
