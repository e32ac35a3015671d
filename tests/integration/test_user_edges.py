"""Edges a new user meets first: paths given to ``pymr.run`` as ``Path`` or bytes, a
parameter given twice, ``-q`` with skipped files, links inside an input directory,
``-o LINK --force``, file names that are not UTF-8, and a reader that leaves early.

Most cases call ``pymr.cli.main`` or ``pymr.run`` in this process (each run starts a real
embedded cluster); what depends on a real stderr or stdout pipe runs ``python -m pymr``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pymr
from pymr import cli
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
