"""Loading a user's job file: what it ships, what it must define, and how its errors read."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import pytest

from pymr import api
from pymr.errors import JobLoadError, UsageError
from pymr.jobs import JobSpec, builtin_spec, sha256_of
from pymr.jobs.program import ProgramCache, load_program, resolve_job, spec_from_file
from tests import helpers

SMALLEST = helpers.SMALLEST_JOB


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_the_smallest_job_loads_and_runs(tmp_path: Path) -> None:
    program = load_program(spec_from_file(str(write(tmp_path, "bigrams.py", SMALLEST))))
    assert program.map is not None and not program.map_takes_position
    assert program.combine is None and program.order == "key"
    assert program.fields == ("key", "value") and program.line_mode
    assert list(program.map("a b c")) == [("a b", 1), ("b c", 1)]
    assert program.reduce("a b", [1, 1, 1]) == 3


def test_map_with_a_position_and_the_declarations(tmp_path: Path) -> None:
    path = write(tmp_path, "inv.py", '''\
"""Where each word occurs.

More text for --help."""
from pymr.api import sum_values
ORDER = "value"
FIELDS = ("word", "places")
def map(line, pos):
    yield line, pos.line
combine = sum_values
reduce = sum_values
''')
    program = load_program(spec_from_file(str(path)))
    assert program.map_takes_position and program.order == "value"
    assert program.fields == ("word", "places")
    assert program.combine_is_sum and program.reduce_is_sum
    assert program.summary_line() == "Where each word occurs."
    assert list(program.map("x", api.Position("a.txt", 7))) == [("x", 7)]


@pytest.mark.parametrize("text,expected", [
    ("def map(line):\n    yield line, 1\ndef reduce(key values):\n    pass\n",
     ":3: SyntaxError"),
    ("def map(line):\n    yield line, 1\n", ":1: the job defines no reduce(key, values)"),
    ("def reduce(k, v):\n    return 1\n", ":1: the job defines no map(line)"),
    ("def map(a, b, c):\n    yield 1\ndef reduce(k, v):\n    return 1\n",
     ":1: map must take map(line) or map(line, pos)"),
    ("ORDER = 'random'\ndef map(l):\n    yield l, 1\ndef reduce(k, v):\n    return 1\n",
     ":1: ORDER must be one of"),
    ("x = 1\nraise RuntimeError('at load')\n", ":2: RuntimeError: at load"),
])
def test_a_broken_job_is_one_line_naming_file_and_line(tmp_path: Path, text: str,
                                                       expected: str) -> None:
    path = write(tmp_path, "job.py", text)
    with pytest.raises(JobLoadError) as info:
        load_program(spec_from_file(str(path)))
    message = str(info.value)
    assert message.startswith(str(path) + expected), message
    assert "\n" not in message and info.value.exit_code == 2


def test_a_missing_third_party_module_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "job.py", "import no_such_module_pymr_test\n" + SMALLEST)
    with pytest.raises(JobLoadError) as info:
        load_program(spec_from_file(str(path)))
    assert info.value.missing_module == "no_such_module_pymr_test"
    assert "no_such_module_pymr_test" in str(info.value)


@pytest.mark.parametrize("job,helper,where,instead", [
    ("from . import helper\n", "ONE = 1\n", "job.py:1", "write 'import helper'"),
    ("from .helper import ONE as one\n", "ONE = 1\n", "job.py:1",
     "write 'from helper import ONE as one'"),
    ("import helper\n", "X = 1\ndef f():\n    from . import other\n", "helper.py:3",
     "write 'import other'"),
])
def test_a_relative_import_says_to_import_the_helper_by_name(
        tmp_path: Path, job: str, helper: str, where: str, instead: str) -> None:
    # Given a job folder whose job file (or a helper beside it) imports relatively
    write(tmp_path, "helper.py", helper)
    path = write(tmp_path, "job.py", job + SMALLEST)
    # When the job is read, before any node is contacted
    with pytest.raises(JobLoadError) as info:
        load_program(spec_from_file(str(path)))
    # Then one line names the import and says what to write (exit 2)
    message = str(info.value)
    assert message.startswith(str(tmp_path / where) if where != "job.py:1"
                              else str(path) + ":1"), message
    assert "relative import" in message and instead in message, message
    assert "\n" not in message and info.value.exit_code == 2


def test_a_relative_import_inside_a_helper_package_still_works(tmp_path: Path) -> None:
    write(tmp_path, "pkg/__init__.py", "from .sub import TWO\n")
    write(tmp_path, "pkg/sub.py", "TWO = 2\n")
    job = write(tmp_path, "job.py", "import pkg\n" + SMALLEST.replace(
        "return sum(values)", "return sum(values) * pkg.TWO"))
    assert load_program(spec_from_file(str(job))).reduce("k", [1]) == 2


def test_helper_modules_travel_with_the_job_and_load_from_the_shipped_text(
        tmp_path: Path) -> None:
    # Given a job that imports a module and a package from its own folder,
    write(tmp_path, "helper.py", "from pkg.sub import TWO\nONE = 1\nBOTH = ONE + TWO\n")
    write(tmp_path, "pkg/__init__.py", "")
    write(tmp_path, "pkg/sub.py", "TWO = 2\n")
    job = write(tmp_path, "job.py", "import helper\n" + SMALLEST.replace(
        "return sum(values)", "return sum(values) * helper.BOTH"))
    spec = spec_from_file(str(job))
    # then the spec carries them, and their text is part of the hash,
    assert sorted(spec.modules) == ["helper.py", "pkg/__init__.py", "pkg/sub.py"]
    assert spec.sha256 != sha256_of(spec.source)
    # and when the files are gone from disk, the job still loads from what was shipped,
    for rel in spec.modules:
        (tmp_path / rel).unlink()
    program = load_program(spec)
    assert program.reduce("k", [1, 1]) == 6
    # without leaving the helper in this process's modules.
    assert "helper" not in sys.modules and "pkg" not in sys.modules


def test_two_jobs_with_a_helper_of_the_same_name_do_not_mix(tmp_path: Path) -> None:
    programs = []
    for n in (1, 2):
        folder = tmp_path / f"job{n}"
        write(folder, "helper.py", f"FACTOR = {n * 10}\n")
        job = write(folder, "job.py", "import helper\n" + SMALLEST.replace(
            "return sum(values)", "return sum(values) * helper.FACTOR"))
        programs.append(load_program(spec_from_file(str(job))))
    assert [p.reduce("k", [1]) for p in programs] == [10, 20]


def test_a_traceback_shows_the_users_own_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "boom.py", SMALLEST.replace(
        "words = line.split()", "words = line.split()\n    if 'bad' in words: "
        "raise ValueError('bad record')"))
    spec = spec_from_file(str(path))
    path.unlink()  # the lines come from the shipped text, not from the disk
    program = load_program(spec)
    assert program.map is not None
    try:
        list(program.map("a bad line"))
    except ValueError:
        text = traceback.format_exc()
    else:
        pytest.fail("map did not raise")
    assert f'File "{path}", line 3, in map' in text
    assert "raise ValueError('bad record')" in text


def test_parameters_defaults_required_unknown_and_setup(tmp_path: Path) -> None:
    path = write(tmp_path, "grep.py", '''\
import re
PARAMS = {"pattern": None, "flags": ""}
_rx = None
def setup(params):
    global _rx
    _rx = re.compile(params["pattern"], re.I if "i" in params["flags"] else 0)
def map(line):
    if _rx.search(line):
        yield line, 1
def reduce(key, values):
    return sum(values)
''')
    spec = spec_from_file(str(path))
    program = load_program(spec, {"pattern": "err", "flags": "i"})
    assert program.params == {"pattern": "err", "flags": "i"}
    assert list(program.map("An ERROR")) == [("An ERROR", 1)]
    with pytest.raises(UsageError, match="needs -p pattern=VALUE"):
        load_program(spec, {})
    with pytest.raises(UsageError, match="has no parameter 'colour'"):
        load_program(spec, {"pattern": "x", "colour": "red"})
    with pytest.raises(JobLoadError, match="setup failed: error"):
        load_program(spec, {"pattern": "("})


def test_the_cache_checks_the_hash_and_loads_once(tmp_path: Path) -> None:
    spec = spec_from_file(str(write(tmp_path, "j.py", SMALLEST)))
    cache = ProgramCache()
    assert cache.load(spec, {}) is cache.load(spec, {})
    forged = JobSpec(spec.name, spec.source + "\nimport os\n", spec.sha256, spec.filename)
    with pytest.raises(JobLoadError, match="does not match its sha256"):
        cache.load(forged, {})
    cache.forget(spec.sha256)
    assert len(cache) == 0


def test_built_in_names_and_paths_resolve(tmp_path: Path) -> None:
    spec = resolve_job("wordcount")
    assert spec == builtin_spec("wordcount") and spec.sha256 == sha256_of(spec.source)
    with pytest.raises(UsageError, match="unknown job 'nosuchjob'"):
        resolve_job("nosuchjob")
    with pytest.raises(UsageError, match="no such job file"):
        resolve_job(str(tmp_path / "missing.py"))
