"""``pymr job wordcount`` end to end: inputs, outputs, formats and errors.

Most tests call ``pymr.cli.main.main`` in this process (each run still starts a real embedded
cluster: node and executor processes on loopback); one test runs ``python -m pymr`` as a
real subprocess with stdout a pipe. Every answer is compared byte for byte with the
reference rule (``pymr.wordtokens.reference_count``).
"""

from __future__ import annotations

import bz2
import gzip
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pymr.cli import main as cli
from pymr.wordtokens import count_bad_sequences, reference_count
from tests import helpers

#: One small embedded node: most CLI behaviour does not depend on the cluster's shape.
SMALL = ["--local", "1", "--slots", "1"]
#: Several tasks, nodes and partitions.
SPREAD = ["--local", "2", "--slots", "1", "--split-size", "64K", "--partitions", "3"]


def run(capsysbinary: pytest.CaptureFixture[bytes], *argv: str | Path
        ) -> tuple[int, bytes, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsysbinary.readouterr()
    return code, out, err.decode("utf-8", "replace")


def leftovers(directory: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


# ------------------------------------------------------------------ stdout


def test_piped_stdout_is_exactly_the_tsv(text_files, tmp_path: Path) -> None:
    # Given 1 MiB of text and `python -m pymr` as a real process with stdout a pipe
    text = text_files(1 << 20, seed=3)
    proc = subprocess.run(
        [sys.executable, "-m", "pymr", "job", "wordcount", str(text), *SPREAD],
        stdin=subprocess.DEVNULL, capture_output=True, env=helpers.subprocess_env(),
        cwd=tmp_path, timeout=120)
    # Then it succeeds and stdout holds the answer and nothing else
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert proc.stdout == text_files.expected(text)
    assert b"Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == [], "the job wrote files in its working directory"


def test_top_n_when_piped_prints_the_first_n(capsysbinary, text_files) -> None:
    text = text_files(256 << 10, seed=4)
    code, out, _ = run(capsysbinary, "job", "wordcount", text, *SMALL, "--top", "25", "-q")
    assert code == 0
    expected = text_files.expected(text).splitlines(keepends=True)[:25]
    assert out == b"".join(expected)


def test_several_files_are_counted_separately_and_summed(capsysbinary, write_text) -> None:
    # Given two files where the first ends inside a word and the second starts with one
    a = write_text("a.txt", "hello wor")
    b = write_text("b.txt", "ld hello\nWORLD")
    code, out, _ = run(capsysbinary, "job", "wordcount", a, b, *SMALL, "-q")
    # Then the file end is a word boundary: "wor" and "ld" are words, never "world"
    assert code == 0
    assert out == helpers.expected_tsv(helpers.reference_for_files([a, b]))
    assert out == b"hello\t2\nld\t1\nwor\t1\nworld\t1\n"


def test_reader_closing_the_pipe_early_is_not_an_error(text_files) -> None:
    # Given `pymr job ... | head -1`: the reader goes away after the first line
    text = text_files(1 << 20, seed=12)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pymr", "job", "wordcount", str(text), *SMALL],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=helpers.subprocess_env())
    try:
        first = proc.stdout.readline()
        proc.stdout.close()
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    # Then the first line was right and the job ends cleanly, with no traceback
    assert first == text_files.expected(text).split(b"\n", 1)[0] + b"\n"
    assert proc.returncode == 0, err.decode(errors="replace")
    assert b"Traceback" not in err and b"BrokenPipe" not in err


# ------------------------------------------------------------------ -o / --format


def test_output_file_is_written_atomically(capsysbinary, text_files, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an output path in an empty directory
    text = text_files(512 << 10, seed=5)
    outdir = tmp_path / "out"
    outdir.mkdir()
    target = outdir / "counts.tsv"
    renames: list[tuple[str, str, bool, int]] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        renames.append((str(src), str(dst), os.path.exists(dst), os.path.getsize(src)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    # When the job runs with -o
    code, out, err = run(capsysbinary, "job", "wordcount", text, *SPREAD, "-o", target, "-q")
    # Then the answer is in the file, complete, and arrived by one rename from the same dir
    assert code == 0, err
    assert out == b""
    expected = text_files.expected(text)
    assert target.read_bytes() == expected
    renames = [r for r in renames if Path(r[1]) == target]
    assert len(renames) == 1
    src, dst, existed, size = renames[0]
    assert Path(dst) == target and Path(src).parent == outdir
    assert not existed and size == len(expected), "the file appeared before it was complete"
    assert leftovers(outdir, {"counts.tsv"}) == [], "temporary files left behind"


def test_existing_output_is_refused_without_force(capsysbinary, write_text, tmp_path) -> None:
    text = write_text("in.txt", "one two two\n")
    target = write_text("out.tsv", "precious\n")
    code, out, err = run(capsysbinary, "job", "wordcount", text, *SMALL, "-o", target)
    assert code == 2
    assert "exists" in helpers.one_error_line(err) and "--force" in err
    assert target.read_bytes() == b"precious\n"
    code, _, err = run(capsysbinary, "job", "wordcount", text, *SMALL, "-o", target, "--force",
                       "-q")
    assert code == 0, err
    assert target.read_bytes() == b"two\t2\none\t1\n"
    assert leftovers(tmp_path, {"in.txt", "out.tsv"}) == []


@pytest.mark.parametrize("where", ["missing-dir", "is-a-dir"])
def test_bad_output_path_is_a_usage_error(capsysbinary, write_text, tmp_path, where) -> None:
    text = write_text("in.txt", "one two\n")
    target = tmp_path / "no" / "such" / "dir" / "out.tsv" if where == "missing-dir" else tmp_path
    code, _, err = run(capsysbinary, "job", "wordcount", text, *SMALL, "-o", target)
    assert code == 2
    helpers.one_error_line(err)
    assert not (tmp_path / "no").exists()


def test_json_format_parses_and_equals_the_reference(capsysbinary, text_files, tmp_path) -> None:
    text = text_files(256 << 10, seed=6)
    target = tmp_path / "counts.json"
    code, _, err = run(capsysbinary, "job", "wordcount", text, *SPREAD, "--format", "json",
                       "-o", target, "-q")
    assert code == 0, err
    got = json.loads(target.read_text("utf-8"))
    counts = text_files.counts(text)
    expected = [{"word": w.decode("utf-8"), "count": c}
                for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    assert got == expected


def test_json_to_stdout_of_an_empty_input(capsysbinary, write_text) -> None:
    empty = write_text("empty.txt", b"")
    code, out, _ = run(capsysbinary, "job", "wordcount", empty, *SMALL, "--format", "json",
                       "-q")
    assert code == 0
    assert json.loads(out) == []


# ------------------------------------------------------------------ inputs


def test_empty_file_gives_empty_output(capsysbinary, write_text, tmp_path) -> None:
    empty = write_text("empty.txt", b"")
    code, out, err = run(capsysbinary, "job", "wordcount", empty, *SMALL)
    assert code == 0, err
    assert out == b""
    assert "Traceback" not in err
    target = tmp_path / "out.tsv"
    code, _, err = run(capsysbinary, "job", "wordcount", empty, *SMALL, "-o", target, "-q")
    assert code == 0 and target.read_bytes() == b""


def test_whitespace_only_file_has_no_words(capsysbinary, write_text) -> None:
    blank = write_text("blank.txt", " \n\t\r\n   \n" * 1000)
    code, out, _ = run(capsysbinary, "job", "wordcount", blank, *SMALL, "--split-size", "1K",
                       "-q")
    assert code == 0 and out == b""


def test_missing_input_is_one_line_and_exit_2(capsysbinary, tmp_path) -> None:
    missing = tmp_path / "nope.txt"
    code, out, err = run(capsysbinary, "job", "wordcount", missing, *SMALL)
    assert code == 2 and out == b""
    line = helpers.one_error_line(err)
    assert str(missing) in line


def test_missing_input_in_a_real_process(tmp_path) -> None:
    proc = subprocess.run([sys.executable, "-m", "pymr", "job", "wordcount",
                           str(tmp_path / "nope.txt")], capture_output=True,
                          env=helpers.subprocess_env(), timeout=60)
    assert proc.returncode == 2 and proc.stdout == b""
    helpers.one_error_line(proc.stderr.decode())


# A Ctrl-C that lands while a lazily imported module builds a dataclass leaves the
# KeyboardInterrupt escaping code run by exec() of a string; this stands in for that moment.
_INTERRUPTED_IN_EXEC = """
import sys
from pymr.cli import main as cli
def cmd_job(args):
    exec("raise KeyboardInterrupt")
cli.cmd_job = cmd_job
sys.exit(cli.main(["job", "wordcount", "x"]))
"""


def test_ctrl_c_inside_exec_still_exits_130_not_killed_by_sigint(tmp_path: Path) -> None:
    # Given `python -m ...` (as `python -m pymr` runs) interrupted while Python ran exec()'d
    # code: CPython then marks the interrupt unhandled and re-kills itself with SIGINT at exit
    (tmp_path / "interrupted_in_exec.py").write_text(_INTERRUPTED_IN_EXEC)
    env = helpers.subprocess_env()
    env["PYTHONPATH"] += os.pathsep + str(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "interrupted_in_exec"], capture_output=True,
                          env=env, timeout=60)
    # Then the process exits with the documented 130 and one line, whatever CPython marked
    assert proc.returncode == 130, (proc.returncode, proc.stderr.decode())
    assert "interrupted" in helpers.one_error_line(proc.stderr.decode())


def test_binary_file_is_refused_unless_binary(capsysbinary, write_text, tmp_path) -> None:
    data = b"hello\x00world hello\n\x00\x01\x02 caf\xc3\xa9 end"
    binary = write_text("blob.bin", data)
    code, out, err = run(capsysbinary, "job", "wordcount", binary, *SMALL)
    assert code == 2 and out == b""
    assert "binary" in helpers.one_error_line(err)
    code, out, err = run(capsysbinary, "job", "wordcount", binary, *SMALL, "--binary", "-q")
    assert code == 0, err
    assert out == helpers.expected_tsv(reference_count(data))


def test_directory_input(capsysbinary, write_text, tmp_path, text_files,
                         caplog: pytest.LogCaptureFixture) -> None:
    # Given a tree with text files, a binary file, an empty file and a symlink to outside
    outside = write_text("outside.txt", "linked from the tree\n")
    root = tmp_path / "tree"
    a = write_text("tree/a.txt", "alpha beta\nbeta gamma")
    b = write_text("tree/sub/b.txt", text_files(100 << 10, seed=8).read_bytes())
    c = write_text("tree/sub/deeper/c.md", "Gamma delta\r\n")
    write_text("tree/sub/empty.txt", b"")
    write_text("tree/blob.bin", b"binary\x00data")
    os.symlink(outside, root / "link.txt")
    # When the directory is the input
    code, out, err = run(capsysbinary, "job", "wordcount", root, *SPREAD)
    # Then the text files are counted, each on its own, the linked file as a file; the
    # binary file is not
    assert code == 0, err
    assert out == helpers.expected_tsv(helpers.reference_for_files([a, outside, b, c]))
    assert b"linked" in out and b"binary" not in out
    assert any("blob.bin" in r.getMessage() for r in caplog.records), \
        "a binary file skipped inside a directory is named in a warning"


@pytest.mark.parametrize("suffix,opener", [(".gz", gzip.open), (".bz2", bz2.open)])
def test_compressed_input(capsysbinary, text_files, tmp_path, suffix, opener) -> None:
    text = text_files(512 << 10, seed=9)
    packed = tmp_path / f"text{suffix}"
    with opener(packed, "wb") as f:
        f.write(text.read_bytes())
    code, out, err = run(capsysbinary, "job", "wordcount", packed, *SPREAD, "-q")
    assert code == 0, err
    assert out == text_files.expected(text)


def test_corrupt_gz_is_an_error_not_a_traceback(capsysbinary, tmp_path) -> None:
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(b"hello world\n" * 1000)[:-20] + b"\x00" * 5)
    code, _, err = run(capsysbinary, "job", "wordcount", bad, *SMALL, "-q")
    assert code in (1, 2)
    helpers.one_error_line(err)


def test_stdin_dash(capsysbinary, text_files, private_tmp, monkeypatch) -> None:
    # Given the text on standard input, and a private temporary directory
    text = text_files(256 << 10, seed=10)
    spool = private_tmp
    with open(text, "rb") as stdin_file:
        monkeypatch.setattr(sys, "stdin", helpers.StdinLike(stdin_file))
        code, out, err = run(capsysbinary, "job", "wordcount", "-", *SPREAD, "-q")
    # Then the answer is right, and nothing is left in the temporary directory
    assert code == 0, err
    assert out == text_files.expected(text)
    assert leftovers(spool, set()) == [], "the job left files in $TMPDIR"


def test_stdin_in_a_real_process(text_files, tmp_path) -> None:
    text = text_files(128 << 10, seed=11)
    with open(text, "rb") as f:
        proc = subprocess.run([sys.executable, "-m", "pymr", "job", "wordcount", "-", *SMALL],
                              stdin=f, capture_output=True, env=helpers.subprocess_env(),
                              timeout=120)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert proc.stdout == text_files.expected(text)


def test_token_longer_than_a_split_extends_it(capsysbinary, write_text) -> None:
    token = "x" * 5000
    data = f"a b {token} c\n{token}\n" + "word " * 2000
    path = write_text("long.txt", data)
    code, out, err = run(capsysbinary, "job", "wordcount", path, *SMALL, "--split-size", "1K",
                         "-q")
    assert code == 0, err
    assert out == helpers.expected_tsv(reference_count(data.encode()))


def test_token_longer_than_max_token_is_a_usage_error(capsysbinary, write_text) -> None:
    data = "a b\n" * 100 + "y" * 5000 + "\nc d\n"
    path = write_text("huge-token.txt", data)
    code, out, err = run(capsysbinary, "job", "wordcount", path, *SMALL, "--split-size", "1K",
                         "--max-token", "2K")
    assert code == 2 and out == b""
    line = helpers.one_error_line(err)
    assert str(path) in line and "400" in line, "the message names the file and the offset"


def test_embedded_cluster_works_with_a_long_tmpdir(capsysbinary, write_text, tmp_path,
                                                  monkeypatch) -> None:
    """A long $TMPDIR (deep home directories, macOS's /var/folders/..., CI workspaces) must
    not stop `pymr job`: a Unix socket path is limited to 107 bytes, so nothing may put one
    at a path that grows with $TMPDIR."""
    # Given a $TMPDIR of 80 characters
    deep = tmp_path / "t"
    deep = deep / ("d" * max(1, 80 - len(str(deep)) - 1))
    deep.mkdir(parents=True)
    assert len(str(deep)) >= 80
    monkeypatch.setenv("TMPDIR", str(deep))
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    text = write_text("in.txt", "a long temporary directory\n" * 100)
    # When a job runs on the embedded cluster
    code, out, err = run(capsysbinary, "job", "wordcount", text, *SMALL, "-q")
    # Then it works and cleans up
    assert code == 0, err
    assert out == helpers.expected_tsv(reference_count(text.read_bytes()))
    assert leftovers(deep, set()) == []


def test_invalid_utf8_is_counted_with_a_warning(capsysbinary, write_text) -> None:
    # Given text with invalid UTF-8 sequences (Latin-1 bytes, a lone continuation, a cut
    # multi-byte sequence, an overlong encoding), spread over many splits
    line = b"caf\xe9 na\xefve \x80 stra\xc3 \xc0\xaf ok caf\xc3\xa9 r\xc3\xa9sum\xc3\xa9\n"
    data = line * 3000
    path = write_text("latin.txt", data)
    code, out, err = run(capsysbinary, "job", "wordcount", path, *SPREAD, "--split-size", "8K")
    # Then the words are those of the reference rule (U+FFFD replaces the bad bytes)
    assert code == 0, err
    assert out == helpers.expected_tsv(reference_count(data))
    # and stderr says how many bad sequences were replaced
    bad = count_bad_sequences(data)
    assert bad > 0
    warnings = [x for x in err.splitlines() if "invalid UTF-8" in x]
    assert len(warnings) == 1, err
    assert f"{bad} byte sequence" in warnings[0]


def test_whitespace_tokenizer_keeps_case_and_punctuation(capsysbinary, write_text) -> None:
    data = "Hello, hello HELLO\tdon't\r\nhello, \u00e9t\u00e9\x0bhello\x0c\u00e9t\u00e9\n"
    path = write_text("t.txt", data)
    code, out, _ = run(capsysbinary, "job", "wordcount", path, *SMALL, "--tokenizer",
                       "whitespace", "-q")
    assert code == 0
    assert out == helpers.expected_tsv(reference_count(data.encode(), "whitespace"))
    assert out == ("hello\t2\n\u00e9t\u00e9\t2\nHELLO\t1\nHello,\t1\ndon't\t1\n"
                   "hello,\t1\n").encode()


# ------------------------------------------------------------------ usage errors


@pytest.mark.parametrize("argv", [
    ["job", "nosuchjob", "{text}"],
    ["job", "wordcount", "{text}", "--split-size", "0"],
    ["job", "wordcount", "{text}", "--split-size", "lots"],
    ["job", "wordcount", "{text}", "--split-size", "1"],
    ["job", "wordcount", "{text}", "--local", "10000"],
    ["job", "wordcount", "{text}", "--partitions", "0"],
    ["job", "wordcount", "{text}", "--tokenizer", "letters"],
    ["job", "wordcount", "{text}", "--format", "xml"],
    ["job", "wordcount"],
    ["job", "wordcount", "{text}", "--no-such-flag"],
    ["frobnicate"],
], ids=lambda a: " ".join(a))
def test_usage_errors_exit_2_with_one_line(capsysbinary, write_text, argv) -> None:
    text = write_text("in.txt", "x\n")
    code, out, err = run(capsysbinary, *[a.replace("{text}", str(text)) for a in argv])
    assert code == 2 and out == b""
    helpers.one_error_line(err)


def test_no_command_prints_help_and_exits_2(capsysbinary) -> None:
    code, out, err = run(capsysbinary)
    assert code == 2 and out == b""
    assert "job" in err



@pytest.mark.parametrize("raised", [OSError(28, "No space left on device", "/data/x"),
                                    ValueError("a pymr bug"), RuntimeError("another")])
def test_an_unforeseen_error_is_one_line_and_exit_1(capsys, monkeypatch, raised) -> None:
    def boom(args: object) -> int:
        raise raised

    parser = cli.build_parser
    monkeypatch.setattr(cli, "build_parser", lambda: _with_func(parser(), boom))
    assert cli.main(["jobs"]) == 1
    line = helpers.one_error_line(capsys.readouterr().err)
    assert ("No space left on device: /data/x" in line if isinstance(raised, OSError)
            else f"internal error: {type(raised).__name__}" in line and "--debug" in line)


def _with_func(parser, func):
    """The parser, with the 'jobs' subcommand bound to ``func``."""
    for action in parser._subparsers._group_actions:
        action.choices["jobs"].set_defaults(func=func)
    return parser
