"""Edges a new user meets first: paths given to ``pymr.run`` as ``Path`` or bytes, a
parameter given twice, ``-q`` with skipped files, links inside an input directory,
``-o LINK --force``, file names that are not UTF-8, and a reader that leaves early.

Most cases call ``pymr.cli.main.main`` or ``pymr.run`` in this process (each run starts a real
embedded cluster); what depends on a real stderr or stdout pipe runs ``python -m pymr``.
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pymr
from pymr.cli import main as cli
from pymr.errors import UsageError
from tests import helpers

#: One small embedded node: none of these depends on the cluster's shape.
SMALL = ["--local", "1", "--slots", "1"]


def run(capsysbinary: pytest.CaptureFixture[bytes], *argv: str | Path
        ) -> tuple[int, bytes, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsysbinary.readouterr()
    return code, out, err.decode("utf-8", "replace")


def pymr_process(*argv: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "pymr", *map(str, argv)],
                          stdin=subprocess.DEVNULL, capture_output=True,
                          env=helpers.subprocess_env(), timeout=timeout)


# ------------------------------------------------------------------ pymr.run paths


def test_run_takes_a_path_object_bytes_and_a_single_path(tmp_path: Path) -> None:
    # Given a text file named as a Path, as bytes, alone or in a list
    book = tmp_path / "book.txt"
    book.write_bytes(b"one two two\n")
    expected = [(b"two", 2), (b"one", 1)]
    # Then each is the same input
    assert list(pymr.run("wordcount", book, local=1, slots=1)) == expected
    assert list(pymr.run("wordcount", [os.fsencode(book)], local=1, slots=1)) == expected
    assert list(pymr.run("wordcount", (p for p in [book]), local=1, slots=1)) == expected


@pytest.mark.parametrize("paths", [42, ["ok.txt", 3.5], None])
def test_run_with_something_that_is_not_a_path_is_a_typed_error(paths: object) -> None:
    with pytest.raises(UsageError) as info:
        pymr.run("wordcount", paths)  # type: ignore[arg-type]
    message = str(info.value)
    assert "not a path" in message or "paths must be" in message, message
    assert "\n" not in message and info.value.exit_code == 2


# ------------------------------------------------------------------ -p


@pytest.mark.parametrize("argv,named", [
    (["-p", "pattern=a", "-p", "pattern=b"], "-p pattern is given twice ('a' and 'b')"),
    (["-p", "pattern=a", "-p", " pattern=a"], "-p pattern is given twice"),
    (["-p", "pattern"], "-p 'pattern': expected NAME=VALUE"),
    (["-p", "pattren=a"], "job grep has no parameter 'pattren'"),
])
def test_a_repeated_malformed_or_unknown_parameter_is_one_line_and_exit_2(
        capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path, argv: list[str],
        named: str) -> None:
    book = tmp_path / "book.txt"
    book.write_bytes(b"a b\n")
    code, out, err = run(capsysbinary, "job", "grep", book, *argv, *SMALL)
    assert code == 2 and out == b""
    assert named in helpers.one_error_line(err), err


def test_tokenizer_flag_and_parameter_must_agree(capsysbinary: pytest.CaptureFixture[bytes],
                                                 tmp_path: Path) -> None:
    book = tmp_path / "book.txt"
    book.write_bytes(b"A a\n")
    code, _, err = run(capsysbinary, "job", "wordcount", book, "--tokenizer", "whitespace",
                       "-p", "tokenizer=words", *SMALL)
    assert code == 2 and "disagree" in helpers.one_error_line(err)
    code, out, err = run(capsysbinary, "job", "wordcount", book, "--tokenizer", "whitespace",
                         "-p", "tokenizer=whitespace", *SMALL, "-q")
    assert code == 0, err
    assert out == b"A\t1\na\t1\n"


# ------------------------------------------------------------------ -q and links


def test_quiet_prints_one_count_of_skipped_files_not_a_line_each(tmp_path: Path) -> None:
    # Given a directory with one text file, three binary files and a hidden file
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.txt").write_bytes(b"alpha\n")
    for n in range(3):
        (tree / f"blob{n}.bin").write_bytes(b"x\x00y")
    (tree / ".hidden").write_bytes(b"secret\n")
    # When the job runs with -q
    proc = pymr_process("job", "wordcount", tree, *SMALL, "-q")
    # Then stdout is the answer and stderr one warning with the count, naming no file
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"alpha\t1\n"
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert "skipped 3 file(s)" in lines[0] and "without -q" in lines[0], lines
    # And without -q each skipped file is named
    proc = pymr_process("job", "wordcount", tree, *SMALL)
    err = proc.stderr.decode()
    assert all(f"blob{n}.bin" in err for n in range(3)), err


def test_links_inside_a_directory_to_files_are_read_others_are_named(
        capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    # Given a tree with a link to a file outside it, a link to a directory, a link to the
    # tree itself (a loop), a dangling link and a link that points to itself
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "o.txt").write_bytes(b"outside words\n")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "in.txt").write_bytes(b"inside\n")
    os.symlink(outside / "o.txt", tree / "file-link.txt")
    os.symlink(outside, tree / "dir-link")
    os.symlink(tree, tree / "loop")
    os.symlink(tmp_path / "nowhere.txt", tree / "dangling.txt")
    os.symlink(tree / "self", tree / "self")
    # When the tree is the input
    with caplog.at_level(logging.WARNING):
        code, out, err = run(capsysbinary, "job", "wordcount", tree, *SMALL)
    # Then the linked file is read like a file, and each link not followed is named
    assert code == 0, err
    assert out == b"inside\t1\noutside\t1\nwords\t1\n"
    warnings = "\n".join(r.getMessage() for r in caplog.records)
    for name in ("dir-link", "loop", "dangling.txt", "self"):
        assert str(tree / name) in warnings, warnings
    assert "link to a directory" in warnings and "broken link" in warnings


# ------------------------------------------------------------------ -o LINK --force


@pytest.mark.parametrize("slash", ["", "/"])
def test_force_through_a_link_replaces_the_directory_it_points_to(
        capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path, slash: str) -> None:
    # Given a part directory written by a job, and a link to it
    book = tmp_path / "book.txt"
    book.write_bytes(b"one\n")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, _, err = run(capsysbinary, "job", "wordcount", book, *SMALL, "-q",
                       "-o", f"{out_dir / 'real'}/")
    assert code == 0, err
    os.symlink("real", out_dir / "link")
    book.write_bytes(b"two two\n")
    # When a job writes through the link with --force
    code, _, err = run(capsysbinary, "job", "wordcount", book, *SMALL, "-q",
                       "-o", f"{out_dir / 'link'}{slash}", "--force")
    # Then the link still points to the directory, which holds the new parts, and nothing
    # else is left beside them
    assert code == 0, err
    assert os.readlink(out_dir / "link") == "real"
    assert sorted(os.listdir(out_dir)) == ["link", "real"]
    parts = b"".join((out_dir / "real" / n).read_bytes()
                     for n in sorted(os.listdir(out_dir / "real")) if n.startswith("part-"))
    assert parts == b"two\t2\n"


def test_a_link_to_a_file_or_to_nothing_is_not_a_part_directory(
        capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path) -> None:
    book = tmp_path / "book.txt"
    book.write_bytes(b"one\n")
    os.symlink(book, tmp_path / "to-file")
    os.symlink(tmp_path / "nothing", tmp_path / "to-nothing")
    for link in ("to-file", "to-nothing"):
        code, out, err = run(capsysbinary, "job", "wordcount", book, *SMALL,
                             "-o", f"{tmp_path / link}/", "--force")
        assert code == 2 and out == b""
        assert "not to a directory" in helpers.one_error_line(err)
    assert book.read_bytes() == b"one\n" and not (tmp_path / "nothing").exists()


# ------------------------------------------------------------------ names not UTF-8


def test_names_that_are_not_utf8_stay_distinct_and_faithful(tmp_path: Path) -> None:
    # Given two files whose names differ only in bytes that are not UTF-8
    folder = os.fsencode(tmp_path)
    names = [folder + b"/a\xff.txt", folder + b"/a\xfe.txt"]
    for name, text in zip(names, (b"hello world\n", b"hello there\n"), strict=True):
        with open(name, "wb") as f:
            f.write(text)
    # When the inverted index (a map(line, pos) job) runs over the folder
    result = dict(pymr.run("invert", os.fsdecode(folder), local=1, slots=1))
    # Then each place names its own file, whose bytes are the name on disk
    places = {word: [os.fsencode(w.rpartition(":")[0]) for w in where]
              for word, where in result.items()}
    assert places == {"hello": sorted(names), "there": [names[1]], "world": [names[0]]}


def test_a_tsv_field_holding_such_a_name_is_the_name_on_disk() -> None:
    from pymr.engine.output import tsv_field

    name = os.fsdecode(b"dir/a\xff.txt")
    assert tsv_field(name) == b"dir/a\xff.txt"
    assert tsv_field("lone \ud800") == b"lone \\ud800"   # not a byte in disguise: as text
    assert tsv_field([name]) == b'["dir/a\\udcff.txt"]'  # JSON: its escape, valid JSON


def test_a_name_that_is_not_utf8_prints_as_its_own_bytes() -> None:
    # Given the CLI's stdout, UTF-8 with strict errors (a line of 'pymr events' may name
    # such a file, which now travels whole)
    raw = io.BytesIO()
    stdout = io.TextIOWrapper(raw, encoding="utf-8", errors="strict")
    cli._names_as_bytes(stdout)
    # Then printing the name writes the bytes it has on disk instead of failing
    name = os.fsdecode(b"a\xff.txt")
    print(f"map failed at {name}:3", file=stdout)
    stdout.flush()
    assert raw.getvalue() == b"map failed at a\xff.txt:3\n"


# ------------------------------------------------------------------ a reader that leaves


SLOW_JOB = """\
import time

def map(line):
    time.sleep(0.05)
    yield line, 1

def reduce(key, values):
    return sum(values)
"""


def test_a_reader_that_leaves_before_the_answer_cancels_the_job(tmp_path: Path) -> None:
    # Given a job that maps for about 40 s, writing to a pipe
    job = tmp_path / "slow.py"
    job.write_text(SLOW_JOB)
    lines = tmp_path / "lines.txt"
    lines.write_bytes(b"".join(b"%d\n" % i for i in range(800)))
    proc = subprocess.Popen([sys.executable, "-m", "pymr", "job", str(job), str(lines), *SMALL],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=helpers.subprocess_env())
    try:
        # The scenario: the reader leaves a moment into the job (any moment of its ~40 s of
        # mapping will do; nothing is awaited here)
        time.sleep(1.5)
        # When the reader goes away before any record is written (`| head` of a reader
        # that quit, a pager closed early)
        proc.stdout.close()  # type: ignore[union-attr]
        closed = time.monotonic()
        _, err = proc.communicate(timeout=120)
        took = time.monotonic() - closed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    # Then the job is cancelled at once, and pymr exits 0 quietly, as `| head` expects
    assert proc.returncode == 0, err.decode(errors="replace")
    assert took < 20, f"pymr went on for {took:.1f} s after its reader left"
    assert b"Traceback" not in err and b"error" not in err, err
