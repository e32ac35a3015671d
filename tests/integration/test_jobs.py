"""Jobs written in the job API, end to end on loopback clusters.

Each built-in job is checked against a single-process reference written plainly here (a
loop and a dict over the same files), over several split sizes, node counts and partition
counts; then job files of a user's own: the smallest job, a job with a helper module that
exists only on the client, combine on and off, typed keys; and every error a user can
make, each with its exit code and its one line.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import pymr
from pymr.cli import main as cli
from pymr.config import JobOptions
from pymr.engine.inputs import resolve_inputs
from pymr.errors import JobError, PymrError, TaskFailed
from pymr.jobs import JobSpec
from pymr.jobs.program import resolve_job
from pymr.runtime.cluster import LocalCluster
from pymr.runtime.runner import run_job
from pymr.wire.keys import thaw
from tests import helpers

K = 1024
WORD = re.compile(r"\w+(?:['’]\w+)*")


# ------------------------------------------------------------------ references


def lines_of(path: Path) -> list[str]:
    """The lines of a file as the job API defines them, computed independently: split the
    bytes at LF, drop one CR before it, decode each line (invalid bytes replaced)."""
    raw = path.read_bytes().split(b"\n")
    if raw and raw[-1] == b"":
        raw.pop()
    return [(x[:-1] if x.endswith(b"\r") else x).decode("utf-8", "replace") for x in raw]


def ref_wordcount(paths: list[Path], tokenizer: str) -> list[tuple[Any, Any]]:
    return helpers.wordcount_rows(*(path.read_bytes() for path in paths), tokenizer=tokenizer)


def ref_grep(paths: list[Path], pattern: str) -> list[tuple[Any, Any]]:
    out = []
    for path in paths:
        for number, line in enumerate(lines_of(path), 1):
            if re.search(pattern, line):
                out.append(((str(path), number), line))
    return sorted(out)


def ref_bigrams(paths: list[Path]) -> list[tuple[Any, Any]]:
    counts: dict[str, int] = {}
    for path in paths:
        for line in lines_of(path):
            words = WORD.findall(line.lower())
            for i in range(len(words) - 1):
                pair = words[i] + " " + words[i + 1]
                counts[pair] = counts.get(pair, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def ref_invert(paths: list[Path]) -> list[tuple[Any, Any]]:
    index: dict[str, list[tuple[str, int]]] = {}
    for path in paths:
        for number, line in enumerate(lines_of(path), 1):
            for word in set(WORD.findall(line.lower())):
                index.setdefault(word, []).append((str(path), number))
    return sorted((w, [f"{f}:{n}" for f, n in sorted(places)]) for w, places in index.items())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three files: generated text, the same with CRLF line ends and invalid UTF-8, and a
    file whose last line has no newline."""
    root = tmp_path_factory.mktemp("corpus")
    a = helpers.generate_text(root / "a.txt", 96 * K, seed=71)
    b = root / "b.txt"
    text = helpers.generate_text(root / "b.src", 48 * K, seed=72).read_bytes()
    b.write_bytes(text.replace(b"\n", b"\r\n").replace(b" the ", b" th\xffe ", 50))
    c = root / "c.txt"
    c.write_bytes(b"The end of the line\rwith a lone CR\nthe end\nthe last line, no newline")
    return [a, b, c]


@pytest.fixture(scope="module")
def clusters() -> Iterator[dict[str, LocalCluster]]:
    with LocalCluster(nodes=1, slots=1) as one, LocalCluster(nodes=3, slots=1) as three:
        yield {"1x1": one, "3x1": three}


def run_on(cluster: LocalCluster, job: Any, paths: list[Path], **opts: Any
           ) -> tuple[list[tuple[Any, Any]], Any]:
    records: list[tuple[Any, Any]] = []

    def consume(recs: Any, summary: Any) -> None:
        records.extend((thaw(k), thaw(v)) for k, v in recs)

    spec = resolve_job(job) if not isinstance(job, JobSpec) else job
    summary = run_job(spec, resolve_inputs([str(p) for p in paths]), JobOptions(**opts),
                      consume, endpoints=cluster.control_endpoints, key=cluster.key)
    return records, summary


CONFIGS = [  # (cluster, split size, partitions or 0 for one per slot)
    ("1x1", 1 * K, 0),
    ("3x1", 4 * K, 5),
    ("3x1", 64 * K, 1),
]


@pytest.mark.parametrize("cluster_name,split,parts", CONFIGS,
                         ids=[f"{c}-split{s // K}K-r{r}" for c, s, r in CONFIGS])
@pytest.mark.parametrize("job", ["wordcount-words", "wordcount-whitespace", "grep", "bigrams",
                                 "invert"])
def test_builtin_matches_its_reference(job: str, cluster_name: str, split: int, parts: int,
                                       clusters: dict[str, LocalCluster],
                                       corpus: list[Path]) -> None:
    name, _, variant = job.partition("-")
    params = {"tokenizer": variant} if variant else {}
    if name == "grep":
        params = {"pattern": r"\bthe\b|CR$"}
    got, summary = run_on(clusters[cluster_name], name, corpus, split_size=split,
                          num_partitions=parts, params=params)
    expected = {"wordcount": lambda: ref_wordcount(corpus, variant),
                "grep": lambda: ref_grep(corpus, params.get("pattern", "")),
                "bigrams": lambda: ref_bigrams(corpus),
                "invert": lambda: ref_invert(corpus)}[name]()
    assert len(got) == len(expected) and got == expected
    assert summary.records == len(expected)
    assert summary.counters.get("invalid_utf8") == 50  # the same counter for every job


# ------------------------------------------------------------------ job files of a user's own

SMALLEST = helpers.SMALLEST_JOB


def smallest_reference(paths: list[Path]) -> list[tuple[str, int]]:
    counts: collections.Counter[str] = collections.Counter()
    for path in paths:
        for line in lines_of(path):
            words = line.split()
            counts.update(a + " " + b for a, b in zip(words, words[1:], strict=False))
    return sorted(counts.items())


def test_the_smallest_job_file_through_the_cli(tmp_path: Path, corpus: list[Path],
                                               capsysbinary: pytest.CaptureFixture[bytes]
                                               ) -> None:
    job = tmp_path / "bigrams.py"
    job.write_text(SMALLEST)
    out = tmp_path / "out.tsv"
    code = cli.main(["job", str(job), *map(str, corpus), "--local", "2", "--slots", "1",
                     "--split-size", "4K", "-o", str(out), "-q"])
    assert code == 0, capsysbinary.readouterr().err
    expected = b"".join(k.encode() + b"\t%d\n" % v for k, v in smallest_reference(corpus))
    assert out.read_bytes() == expected


def test_python_api_runs_a_file_a_module_and_a_builtin(tmp_path: Path, corpus: list[Path]
                                                       ) -> None:
    job = tmp_path / "smallest_job.py"
    job.write_text(SMALLEST)
    by_path = pymr.run(str(job), [str(p) for p in corpus], split_size=8 * K)
    assert list(by_path) == smallest_reference(corpus)
    assert by_path.summary.records == len(by_path)
    sys.path.insert(0, str(tmp_path))
    try:
        import smallest_job  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
    assert list(pymr.run(smallest_job, [str(p) for p in corpus])) == list(by_path)
    grep = pymr.run("grep", str(corpus[2]), params={"pattern": "end"})
    assert list(grep) == [((str(corpus[2]), 1), "The end of the line\rwith a lone CR"),
                          ((str(corpus[2]), 2), "the end")]


HELPER_JOB = '''"""Counts words by their length class (the rule lives in a helper module)."""
from lengths import length_class
from pymr.api import sum_values

ORDER = "value"


def map(line):
    for word in line.split():
        yield length_class(word), 1


combine = reduce = sum_values
'''

HELPER_MODULE = '''def length_class(word):
    return "long" if len(word) > 6 else "short"
'''


def test_helper_module_travels_with_the_job_and_the_nodes_never_read_the_files(
        tmp_path: Path, corpus: list[Path], clusters: dict[str, LocalCluster]) -> None:
    folder = tmp_path / "myjob"
    folder.mkdir()
    (folder / "job.py").write_text(HELPER_JOB)
    (folder / "lengths.py").write_text(HELPER_MODULE)
    spec = resolve_job(str(folder / "job.py"))
    assert set(spec.modules) == {"lengths.py"}
    shutil.rmtree(folder)  # what travels is the text in the spec: no file is left to import
    got, _ = run_on(clusters["3x1"], spec, corpus, split_size=4 * K)
    counts: collections.Counter[str] = collections.Counter()
    for path in corpus:
        for line in lines_of(path):
            counts.update("long" if len(w) > 6 else "short" for w in line.split())
    assert got == sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


TYPED_JOB = '''
def map(line):
    n = len(line)
    yield n % 3, 1                       # int keys
    yield ("len", n % 2), 1.5            # tuple keys, float values
    yield line[:1], None                 # str keys (may be empty)
    yield line[:1].encode(), b"x"        # bytes keys: never mixed up with str
    yield [n % 2, "list"], (True, None)  # a list key stays a list


def reduce(key, values):
    if isinstance(key, int):
        return sum(values)
    if isinstance(key, tuple):
        return sum(values)
    return len(values)
'''


def test_typed_keys_round_trip_with_and_without_combine(
        tmp_path: Path, corpus: list[Path], clusters: dict[str, LocalCluster]) -> None:
    plain = JobSpec.from_source("typed", TYPED_JOB)
    got, _ = run_on(clusters["3x1"], plain, corpus, split_size=4 * K, num_partitions=4)
    lines = [line for path in corpus for line in lines_of(path)]
    ref: dict[Any, Any] = {}
    for n in (len(x) for x in lines):
        ref[n % 3] = ref.get(n % 3, 0) + 1
        ref[("len", n % 2)] = ref.get(("len", n % 2), 0) + 1.5
    for x in lines:
        ref[x[:1]] = ref.get(x[:1], 0) + 1
        ref[x[:1].encode()] = ref.get(x[:1].encode(), 0) + 1
    lists = collections.Counter(len(x) % 2 for x in lines)
    by_key = {repr(k): (k, v) for k, v in got}
    for key, value in ref.items():
        assert by_key[repr(key)] == (key, value)
        assert type(by_key[repr(key)][0]) is type(key)
    for parity, n in lists.items():
        assert by_key[repr([parity, "list"])] == ([parity, "list"], n)
    # keys in the documented order: numbers < str < bytes < tuples and lists (together)
    rank = {"int": 1, "str": 3, "bytes": 4, "tuple": 5, "list": 5}
    ranks = [rank[type(k).__name__] for k, _ in got]
    assert ranks == sorted(ranks)


COMBINING_JOB = '''
from pymr.api import count

def map(line):
    for word in line.split():
        yield word[:2], len(word)

def combine(key, values):
    count("combined")
    return max(values)

def reduce(key, values):
    return max(values)
'''


def test_combine_on_and_off_give_the_same_answer(corpus: list[Path],
                                                 clusters: dict[str, LocalCluster]) -> None:
    with_combine = JobSpec.from_source("maxlen", COMBINING_JOB)
    without = JobSpec.from_source("maxlen", COMBINING_JOB.replace("def combine(",
                                                                  "def _unused("))
    a, summary = run_on(clusters["3x1"], with_combine, corpus, split_size=4 * K)
    b, _ = run_on(clusters["3x1"], without, corpus, split_size=4 * K)
    assert a == b and a
    assert summary.counters["combined"] > 0


# ------------------------------------------------------------------ errors a user can make


def run_cli(capsysbinary: pytest.CaptureFixture[bytes], *args: str) -> tuple[int, str]:
    code = cli.main(["job", *args])
    captured = capsysbinary.readouterr()
    return code, captured.err.decode("utf-8", "replace")


def test_syntax_error_and_missing_reduce_exit_2_before_any_node(
        tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from pymr.runtime import cluster as cluster_mod

    started: list[object] = []
    monkeypatch.setattr(cluster_mod.LocalCluster, "launch",
                        lambda self: started.append(self))
    text = tmp_path / "in.txt"
    text.write_text("a b\n")
    bad = tmp_path / "bad.py"
    bad.write_text("def map(line):\n    yield line,, 1\n")
    code, err = run_cli(capsysbinary, str(bad), str(text))
    assert code == 2 and f"{bad}:2: SyntaxError" in helpers.one_error_line(err, job_traceback=True)
    noreduce = tmp_path / "noreduce.py"
    noreduce.write_text("def map(line):\n    yield line, 1\n")
    code, err = run_cli(capsysbinary, str(noreduce), str(text))
    assert code == 2
    assert "defines no reduce(key, values)" in helpers.one_error_line(err, job_traceback=True)
    assert started == [], "a node was started for a job that cannot load"


def test_map_raising_on_one_line_names_that_line(
        tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    text = tmp_path / "in.txt"
    text.write_text("".join(f"line {i}\n" for i in range(1, 5001)))
    job = tmp_path / "picky.py"
    job.write_text("def map(line):\n    if line == 'line 4321':\n"
                   "        raise ValueError('no ' + line)\n    yield line, 1\n\n"
                   "def reduce(key, values):\n    return sum(values)\n")
    code, err = run_cli(capsysbinary, str(job), str(text), "--local", "2", "--slots", "1",
                        "--split-size", "4K", "--max-attempts", "2")
    line = helpers.one_error_line(err, job_traceback=True)
    assert code == 1
    assert f"map failed at {text}:4321 " in line and "ValueError: no line 4321" in line
    assert "node local" in line and "task" in line
    assert f'File "{job}", line 3, in map' in err and "raise ValueError('no ' + line)" in err


def test_reduce_raising_names_the_key(tmp_path: Path,
                                      capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    text = tmp_path / "in.txt"
    text.write_text("apple\nbanana\ncherry\n")
    job = tmp_path / "r.py"
    job.write_text("def map(line):\n    yield line, 1\n\ndef reduce(key, values):\n"
                   "    if key == 'banana':\n        raise RuntimeError('no bananas')\n"
                   "    return sum(values)\n")
    code, err = run_cli(capsysbinary, str(job), str(text), "--local", "1")
    line = helpers.one_error_line(err, job_traceback=True)
    assert code == 1 and "reduce failed for key 'banana'" in line and "no bananas" in line
    assert f'File "{job}", line 6, in reduce' in err


def test_a_value_that_cannot_travel_fails_at_once(
        tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    text = tmp_path / "in.txt"
    text.write_text("a b\nc d\n")
    job = tmp_path / "sets.py"
    job.write_text("def map(line):\n    yield line, set(line)\n\n"
                   "def reduce(key, values):\n    return values\n")
    code, err = run_cli(capsysbinary, str(job), str(text), "--local", "1")
    line = helpers.one_error_line(err, job_traceback=True)
    assert code == 1 and "type set cannot travel" in line and f"{job}:2" in line
    assert f"{text}:1" in line
    assert "attempt" not in err, "a value that cannot travel is not retried"


def test_missing_third_party_module_on_a_node_names_module_and_node(
        tmp_path: Path) -> None:
    # Given a module only the client has (on its PYTHONPATH, not in the job's folder)
    libdir = tmp_path / "clientlib"
    libdir.mkdir()
    (libdir / "fancylib.py").write_text("def key(line):\n    return line[:1]\n")
    job = tmp_path / "job" / "j.py"
    job.parent.mkdir()
    job.write_text("import fancylib\n\ndef map(line):\n    yield fancylib.key(line), 1\n\n"
                   "def reduce(key, values):\n    return sum(values)\n")
    text = tmp_path / "in.txt"
    text.write_text("abc\n")
    home = tmp_path / "home"
    with LocalCluster(nodes=1, slots=1) as cluster:
        from pymr.runtime.state import open_state

        open_state(home).save_key(cluster.key)
        nodes = ",".join(e.removeprefix("tcp://") for e in cluster.control_endpoints)
        proc = subprocess.run(
            [sys.executable, "-m", "pymr", "job", str(job), str(text), "--nodes", nodes,
             "--home", str(home), "-q"], capture_output=True, text=True, timeout=120,
            env=helpers.subprocess_env(PYTHONPATH=f"{libdir}{os.pathsep}{helpers.ROOT}"),
            stdin=subprocess.DEVNULL)
    assert proc.returncode == 1, proc.stderr
    line = helpers.one_error_line(proc.stderr, job_traceback=True)
    assert "'fancylib' is not installed" in line and "node local0" in line, line
    assert "attempt" not in proc.stderr, "a job that does not load is not retried"


def test_builtin_only_nodes_are_left_out_and_the_job_fails_if_none_accepts(
        tmp_path: Path, corpus: list[Path]) -> None:
    job = JobSpec.from_source("mine", SMALLEST)
    with LocalCluster(nodes=1, slots=1, builtin_only=True) as only:
        with pytest.raises(JobError) as info:
            run_on(only, job, corpus)
        assert "--builtin-only" in str(info.value) and "no node accepts" in str(info.value)
        got, _ = run_on(only, "bigrams", corpus)
        assert got == ref_bigrams(corpus)


def test_jobs_and_job_help(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli.main(["jobs"]) == 0
    out = capsys.readouterr().out
    for name in ("wordcount", "grep", "bigrams", "invert"):
        assert re.search(rf"^{name}\s+\S", out, re.M), out
    job = tmp_path / "documented.py"
    job.write_text('"""Counts the first letters."""\nPARAMS = {"limit": "3", "tag": None}\n'
                   'def map(line):\n    yield line[:1], 1\n\n'
                   'def reduce(key, values):\n    return sum(values)\n')
    assert cli.main(["job", str(job), "--help"]) == 0
    out = capsys.readouterr().out
    assert "Counts the first letters." in out
    assert re.search(r"limit\s+default: '3'", out) and re.search(r"tag\s+required", out)


def test_params_reach_the_job_and_bad_ones_exit_2(
        tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    text = tmp_path / "in.txt"
    text.write_text("alpha\nbeta\n")
    code, err = run_cli(capsysbinary, "grep", str(text), "-p", "nope=1")
    assert code == 2 and "no parameter 'nope'" in helpers.one_error_line(err, job_traceback=True)
    code, err = run_cli(capsysbinary, "grep", str(text), "-p", "pattern=[")
    assert code == 2
    assert "not a regular expression" in helpers.one_error_line(err, job_traceback=True)
    code = cli.main(["job", "grep", str(text), "-p", "pattern=^b", "--local", "1", "-q"])
    assert code == 0
    assert capsysbinary.readouterr().out == f'["{text}", 2]\tbeta\n'.encode()


def test_map_failing_on_every_attempt_is_a_task_failure(tmp_path: Path) -> None:
    text = tmp_path / "in.txt"
    text.write_text("x\n" * 100)
    with pytest.raises(TaskFailed) as info:
        pymr.run(str(helpers_job(tmp_path)), str(text), max_attempts=2)
    assert isinstance(info.value, PymrError) and info.value.exit_code == 1
    assert f"map failed at {text}:1 " in str(info.value)


def helpers_job(tmp_path: Path) -> Path:
    job = tmp_path / "boom.py"
    job.write_text(helpers.FAILING_JOB)
    return job


# ------------------------------------------------------------------ edges found in review

LAZY_JOB = '''
def map(line):
    import lazyhelper  # imported when map first runs, on the node
    yield lazyhelper.first(line), 1

def reduce(key, values):
    return sum(values)
'''


def test_a_helper_imported_inside_a_function_travels_too(
        tmp_path: Path, corpus: list[Path], clusters: dict[str, LocalCluster]) -> None:
    folder = tmp_path / "lazy"
    folder.mkdir()
    (folder / "job.py").write_text(LAZY_JOB)
    (folder / "lazyhelper.py").write_text("def first(line):\n    return line[:1]\n")
    spec = resolve_job(str(folder / "job.py"))
    shutil.rmtree(folder)
    got, _ = run_on(clusters["3x1"], spec, corpus, split_size=8 * K)
    counts = collections.Counter(line[:1] for path in corpus for line in lines_of(path))
    assert got == sorted(counts.items())


def test_huge_ints_nan_keys_and_tuple_or_list_keys(tmp_path: Path,
                                                   clusters: dict[str, LocalCluster]) -> None:
    text = tmp_path / "in.txt"
    text.write_text("a\nb\nc\n")
    job = JobSpec.from_source("edges", '''
def map(line):
    yield float("nan"), 1
    yield (1, line), 1
    yield [1, line], 1

def reduce(key, values):
    return 10 ** 5000 + sum(values) if key != key else sum(values)
''')
    got, _ = run_on(clusters["1x1"], job, [text], num_partitions=3)
    nan_records = [(k, v) for k, v in got if isinstance(k, float)]
    assert len(nan_records) == 1 and nan_records[0][1] == 10 ** 5000 + 3
    # a tuple and a list with the same items are two keys; the tuple comes first
    rest = [k for k, _ in got if not isinstance(k, float)]
    assert rest == [(1, "a"), [1, "a"], (1, "b"), [1, "b"], (1, "c"), [1, "c"]]


def test_map_returning_none_fails_at_once(tmp_path: Path,
                                          capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    text = tmp_path / "in.txt"
    text.write_text("a\nb\n")
    job = tmp_path / "none.py"
    job.write_text("def map(line):\n    pass\n\ndef reduce(key, values):\n    return 0\n")
    code, err = run_cli(capsysbinary, str(job), str(text), "--local", "1")
    line = helpers.one_error_line(err, job_traceback=True)
    assert code == 1 and "map returned None" in line and f"{text}:1" in line
    assert "attempt" not in err


def test_a_combine_raising_on_the_reduce_side_fails_the_job(
        tmp_path: Path, clusters: dict[str, LocalCluster]) -> None:
    # 300 splits of ~200 lines with one key, every task flushed as its own output: the
    # reducer gathers one combined value per output and runs combine once it holds 256
    text = tmp_path / "in.txt"
    text.write_text("kkkk\n" * (300 * 204))
    job = JobSpec.from_source("fragile", "def map(line):\n    yield line, 1\n\n"
                              "def combine(key, values):\n    if len(values) >= 256:\n"
                              "        raise OverflowError('too many')\n"
                              "    return sum(values)\n\ndef reduce(key, values):\n"
                              "    return sum(values)\n")
    with pytest.raises(JobError) as info:
        run_on(clusters["1x1"], job, [text], split_size=1 * K, flush_key_limit=1)
    assert "reduce failed for key 'kkkk'" in str(info.value) and "too many" in str(info.value)
