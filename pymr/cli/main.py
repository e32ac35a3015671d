"""The command line: parse, call the library, turn ``PymrError`` into one line and an exit code."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import stat
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

from .._version import __version__
from ..config import DEFAULT_DISCOVER_S, HEARTBEAT_INTERVAL_S, JobOptions, MiB
from ..errors import Interrupted, PymrError, UsageError
from ..wording import count_of
from .common import parse_size, positive_int

if TYPE_CHECKING:  # the master (zmq, the protocol) loads after the embedded nodes launch
    from ..engine.summary import JobSummary
    from ..runtime.cluster import LocalCluster
    from ..runtime.placement import Placement, PlacementRequest

log = logging.getLogger("pymr")

_DEFAULTS = JobOptions()
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


#: Smallest --split-size: below it a job is all task overhead (1 byte gave a task per line).
MIN_SPLIT_SIZE = 1 << 10


def split_size(text: str) -> int:
    value = parse_size(text)
    if value < MIN_SPLIT_SIZE:
        raise argparse.ArgumentTypeError(f"split size must be at least 1K: {text!r} "
                                         "(the default is 16M)")
    return value


def death_timeout(text: str) -> float:
    """Seconds; at least three heartbeat periods, so one late heartbeat is not a death."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    low = 3 * HEARTBEAT_INTERVAL_S
    if not low <= value <= 3600:
        raise argparse.ArgumentTypeError(
            f"must be between {low:g} and 3600 seconds (heartbeats are every "
            f"{HEARTBEAT_INTERVAL_S:g} s): {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting, so main() owns the exit."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pymr", description="MapReduce on the machines you already own.")
    parser.add_argument("--version", action="version", version=f"pymr {__version__}")
    parser.add_argument("--debug", action="store_true", help="log details and show tracebacks")
    common = _Parser(add_help=False)  # also accepted after the subcommand
    common.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    _add_job_command(sub, common)
    cat = sub.add_parser("cat", help="merge a job's part files back into one answer",
                         description="Print the records of a part directory (-o DIR/) in "
                         "the job's order: the same bytes as the job's single-file output. "
                         "'cat DIR/part-*' gives every record too, but not in order: "
                         "partitions are cut by a hash of the key.")
    cat.add_argument("directory", metavar="DIR", help="a directory written by 'pymr job -o DIR/'")
    cat.set_defaults(func=cmd_cat)
    jobs = sub.add_parser("jobs", help="list the built-in jobs",
                          description="The jobs that ship with pymr, one line each. A job "
                          "file of your own runs the same way: 'pymr job ./myjob.py PATH'.")
    jobs.set_defaults(func=cmd_jobs)
    from .cluster import add_commands
    from .dashboard import add_commands as add_dashboard

    add_commands(sub)
    add_dashboard(sub)
    return parser


def _add_job_command(sub: Any, common: argparse.ArgumentParser) -> None:
    """``pymr job`` and its options."""
    job = sub.add_parser("job", help="run a job (e.g. 'pymr job wordcount book.txt')",
                         parents=[common],
                         description="Run a job: a built-in ('pymr jobs' lists them) or a "
                         "job file of your own (map and reduce in Python; the nodes get it "
                         "with the job). With no node found, an embedded local cluster on "
                         "this machine runs it. 'pymr job JOB --help' shows a job's "
                         "description and parameters.")
    job.add_argument("job", metavar="JOB",
                     help="a built-in job (wordcount, grep, bigrams, invert) or a job file")
    job.add_argument("paths", metavar="PATH", nargs="+",
                     help="input files or directories ('-' for standard input); "
                     ".gz, .bz2 and .xz are read decompressed")
    job.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                     help="a parameter of the job (repeatable; see 'pymr job JOB --help')")
    job.add_argument("-o", "--output", metavar="PATH",
                     help="write every record to PATH (atomically) instead of stdout; "
                     "PATH/ (a trailing slash, or an existing directory): one part file per "
                     "partition plus _SUCCESS ('pymr cat PATH' merges them back)")
    job.add_argument("--force", action="store_true", help="replace an existing output file")
    job.add_argument("--format", choices=("tsv", "json"), default="tsv",
                     help="output format (default: tsv, 'key<TAB>value' lines; json: an "
                     "array of objects named by the job's FIELDS)")
    job.add_argument("--top", type=positive_int, metavar="N",
                     help="records shown in the terminal table (default 20); when piped, "
                     "print only the first N")
    job.add_argument("--tokenizer", choices=("words", "whitespace"),
                     help="wordcount's parameter, same as -p tokenizer=...: words: "
                     "lower-cased \\w+ words with inner apostrophes (default); whitespace: "
                     "split on ASCII whitespace, case and punctuation kept")
    job.add_argument("--split-size", type=split_size, default=_DEFAULTS.split_size,
                     metavar="SIZE", help="bytes per map task (default 16M, at least 1K)")
    job.add_argument("--max-token", type=parse_size, default=_DEFAULTS.max_token,
                     metavar="SIZE", help="longest single token accepted (default 64M)")
    job.add_argument("--memory", type=parse_size, metavar="SIZE",
                     help="memory budget per node, shared by its executors (default: each "
                     "node's own, a quarter of its machine's memory); beyond it, reducers "
                     "spill sorted runs to the node's disk and merge them at the end")
    job.add_argument("--partitions", type=positive_int, metavar="R",
                     help="reduce partitions (default: one per slot)")
    job.add_argument("--local", type=positive_int, metavar="N",
                     help="run on an embedded cluster of N local nodes (no discovery; "
                     "wins over --nodes)")
    job.add_argument("--slots", type=positive_int, metavar="N",
                     help="executors per embedded node (default: cores / nodes)")
    job.add_argument("--max-attempts", type=positive_int, default=_DEFAULTS.max_attempts,
                     metavar="N", help="attempts per task before the job fails (default 4)")
    job.add_argument("--death-timeout", type=death_timeout, metavar="SECONDS",
                     default=_DEFAULTS.death_timeout_s,
                     help="a node silent this long is lost and its work moves "
                     f"(default {_DEFAULTS.death_timeout_s:g}; raise it on sleepy Wi-Fi)")
    job.add_argument("--binary", action="store_true",
                     help="read files that look binary instead of refusing them")
    job.add_argument("-q", "--quiet", action="store_true", help="no progress and no summary")
    job.add_argument("--nodes", metavar="HOST[:PORT],...",
                     help="use these nodes and the members they know, skipping mDNS and memory "
                     "(HOST alone: control port 7372; one member is enough)")
    job.add_argument("--discover", type=float, metavar="SECONDS",
                     help=f"how long to browse for nodes (default {DEFAULT_DISCOVER_S:g})")
    job.add_argument("--min-nodes", type=positive_int, metavar="N",
                     help="stop browsing as soon as N nodes answered")
    job.add_argument("--home", metavar="DIR", help="pymr state directory (default ~/.pymr, "
                     "or $PYMR_HOME): cluster key, node id")
    job.add_argument("--shared-fs", action="store_true",
                     help="the nodes see the input at the same path (NFS, ...): send byte "
                     "ranges instead of bytes (nodes need 'pymr node --shared-fs')")
    job.add_argument("--dashboard", action="store_true",
                     help="serve the job's live web page while it runs, on "
                     "http://127.0.0.1:7381/ (a free port if taken; the URL is printed)")
    job.add_argument("--interface", metavar="ADDR|NAME,...",
                     help="browse for nodes on these interfaces (default: every address "
                     "except loopback, container bridges and link-local; or "
                     "$PYMR_INTERFACE)")
    job.add_argument("--key-file", metavar="PATH",
                     help="cluster key file (default HOME/cluster.key)")
    job.set_defaults(func=cmd_job)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (never raises for expected failures)."""
    try:
        return _main(argv)
    finally:
        _forget_handled_interrupt()


def _forget_handled_interrupt() -> None:
    """Keep the exit code we return after a Ctrl-C we handled.

    Under ``python -m``, CPython (3.11 to 3.13) kills itself with SIGINT at exit when a
    KeyboardInterrupt ever escaped code run by ``exec`` of a string, even if the program
    caught it later: Ctrl-C can land while a lazily imported module builds a dataclass or
    namedtuple. The job then ended "killed by SIGINT" instead of exit 130, about one run
    in eight. Executing a string resets that interpreter flag."""
    exec("None")


def _main(argv: list[str] | None) -> int:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    if hasattr(sys, "set_int_max_str_digits"):
        sys.set_int_max_str_digits(0)  # a job's huge ints are written out whole
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="pymr: %(levelname)s: %(message)s")
    _names_as_bytes(sys.stdout)
    try:
        job_help = _job_help_request(argv if argv is not None else sys.argv[1:])
        if job_help is not None:
            return _show_job_help(job_help)
        args = build_parser().parse_args(argv)
        func = getattr(args, "func", None)
        if func is not None:
            return int(func(args))
        build_parser().print_help(sys.stderr)
        return EXIT_USAGE
    except PymrError as exc:
        if debug:
            log.exception("failed")
        print(f"pymr: error: {exc}", file=sys.stderr)
        user_tb = getattr(exc, "user_traceback", "")
        if user_tb:
            print(user_tb.rstrip("\n"), file=sys.stderr)
        remote_tb = getattr(exc, "remote_traceback", "")
        if debug and remote_tb:
            print("The whole traceback on the node:\n" + remote_tb.rstrip("\n"),
                  file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("pymr: error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:  # the system refused something no typed error foresaw
        if debug:
            log.exception("failed")
        where = f": {exc.filename}" if exc.filename else ""
        print(f"pymr: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:  # a pymr bug: one line, the traceback with --debug
        if debug:
            log.exception("failed")
        print(f"pymr: error: internal error: {type(exc).__name__}: {exc} (run again with "
              "--debug for the traceback, and please report it)", file=sys.stderr)
        return EXIT_FAILED


def _say(text: str) -> None:
    print(f"pymr: {text}", file=sys.stderr, flush=True)


def _silent(text: str) -> None:
    pass


def _names_as_bytes(stream: Any) -> None:
    """A file name that is not UTF-8 (held as PEP 383 surrogates, e.g. in a line of 'pymr
    events') is written as its own bytes, as ``ls`` does, instead of failing the print."""
    if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
        try:
            stream.reconfigure(errors="surrogateescape")
        except (ValueError, OSError):  # a stream that cannot change its error handler
            pass


# ---------------------------------------------------------------- job


class _Progress:
    """A progress bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self.task: Any = None
        self.discovery_started = time.monotonic()

    def start(self, total_bytes: int, nodes: list[str]) -> None:
        log.debug("the job started (every node acknowledged it) %.3f s after discovery began",
                  time.monotonic() - self.discovery_started)
        if not self.enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        console = Console(stderr=True)
        console.print(f"[dim]nodes: {', '.join(nodes)}[/dim]")
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                            TransferSpeedColumn(), TimeRemainingColumn(), console=console,
                            transient=True)
        self.bar.start()
        self.task = self.bar.add_task("map", total=max(total_bytes, 1))

    def advance(self, nbytes: int) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, nbytes)

    def phase(self, name: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, description=name)

    def event(self, text: str) -> None:
        if self.bar is not None:
            self.bar.console.print(f"[yellow]{text}[/yellow]")
        elif self.enabled:
            print(f"pymr: {text}", file=sys.stderr)
        else:
            log.warning("%s", text)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def cmd_job(args: argparse.Namespace) -> int:
    from ..engine.inputs import release_inputs

    inputs: list[Any] = []
    try:
        return _cmd_job(args, inputs)
    finally:
        release_inputs(inputs)


def job_params(args: argparse.Namespace) -> dict[str, str]:
    """``-p NAME=VALUE`` (and ``--tokenizer``, wordcount's parameter) as a dict."""
    params: dict[str, str] = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"-p {item!r}: expected NAME=VALUE (for example "
                             "-p pattern=ERROR)")
        name = name.strip()
        if name in params:  # the last one silently winning hides a typo
            raise UsageError(f"-p {name} is given twice ({params[name]!r} and {value!r}); "
                             "give each parameter once")
        params[name] = value
    if args.tokenizer is not None:
        if params.get("tokenizer", args.tokenizer) != args.tokenizer:
            raise UsageError(f"--tokenizer {args.tokenizer} and -p tokenizer="
                             f"{params['tokenizer']} disagree; give one of them")
        params["tokenizer"] = args.tokenizer
    return params


def _cmd_job(args: argparse.Namespace, inputs: list[Any]) -> int:
    from ..engine.inputs import resolve_inputs
    from ..engine.output import check_output_path
    from ..engine.partfiles import check_dir_output, is_dir_output
    from ..jobs.program import load_program, resolve_job
    from ..runtime.placement import place
    from .discovery import job_discovery

    # Ctrl-C, SIGTERM and SIGHUP (the terminal closed) cancel the job cleanly, even when
    # started with SIGINT ignored (a background job of a non-interactive shell).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:  # nohup keeps it ignored
        signal.signal(signal.SIGHUP, _terminate)
    params = job_params(args)
    spec = resolve_job(args.job)
    program = load_program(spec, params)  # exit 2 before any node is contacted
    if args.output and is_dir_output(args.output):
        check_dir_output(args.output, args.force)
    elif args.output:
        check_output_path(args.output, args.force)
    _check_embedded_size(args)
    inputs.extend(resolve_inputs(args.paths, binary_ok=args.binary, quiet=args.quiet))
    placing = time.monotonic()
    placement = place(job_placement(args), job_discovery(args.quiet),
                      say=_silent if args.quiet else _say)
    placing_s = time.monotonic() - placing  # discovery's time counts in the job's
    cluster = _launch_embedded(args, placement, sum(f.size for f in inputs))
    try:
        return _run(args, inputs, program, placement, cluster, placing_s)
    finally:
        if cluster is not None:
            cluster.close()  # a no-op when the job ran: run_job closed it


#: Embedded processes (nodes x (1 + slots)) allowed per core. Past that a machine thrashes
#: or swaps: --local 200 on 2 cores started 400 processes and took 36 s for 3 MB.
EMBEDDED_PROCESSES_PER_CORE = 16


def _check_embedded_size(args: argparse.Namespace) -> None:
    nodes, slots = args.local or 1, args.slots or 1
    processes = nodes * (1 + slots)
    limit = max(32, EMBEDDED_PROCESSES_PER_CORE * (os.cpu_count() or 1))
    if processes > limit:
        raise UsageError(f"--local {nodes} with {slots} slot(s) each would start {processes} "
                         f"processes; this machine allows {limit} "
                         f"({EMBEDDED_PROCESSES_PER_CORE} per core): use fewer nodes or slots")


def job_placement(args: argparse.Namespace) -> PlacementRequest:
    """``pymr job``'s options for ``placement.place`` (``--local`` wins over ``--nodes``)."""
    from ..runtime.placement import PlacementRequest
    from .common import interface_spec

    return PlacementRequest(local=args.local or 0, slots=args.slots or 0, nodes=args.nodes,
                            discover_s=args.discover, min_nodes=args.min_nodes,
                            interface=interface_spec(args), home=args.home,
                            key_file=getattr(args, "key_file", None))


def _launch_embedded(args: argparse.Namespace, placement: Placement,
                     total_bytes: int) -> LocalCluster | None:
    """Start the embedded nodes the placement asks for, so they boot while this process
    loads the rest of pymr. Unless discovery fell back to them, and without ``--slots``,
    no more executors than the input has splits: a small job does not pay for processes
    it cannot use."""
    from ..runtime.cluster import LocalCluster
    from ..runtime.placement import Embedded

    if not isinstance(placement, Embedded):
        return None
    cluster = LocalCluster(nodes=placement.nodes, slots=placement.slots)
    if not placement.slots and not placement.fallback:
        splits = -(-total_bytes // args.split_size)
        cluster.slots = max(1, min(cluster.slots, -(-splits // cluster.count)))
    cluster.launch()
    return cluster


def _run(args: argparse.Namespace, inputs: list[Any], program: Any, placement: Placement,
         cluster: LocalCluster | None, placing_s: float) -> int:
    from ..runtime.placement import OnNodes
    from ..runtime.runner import run_job
    from ..wire.keys import thaw

    opts = JobOptions(params=program.params,
                      split_size=args.split_size,
                      max_token=args.max_token, num_partitions=args.partitions or 0,
                      max_attempts=args.max_attempts,
                      memory=args.memory or 0,
                      death_timeout_s=args.death_timeout)
    stdout_tty = sys.stdout.isatty()
    stderr_tty = sys.stderr.isatty()
    progress = _Progress(enabled=stderr_tty and not args.quiet)
    started = progress.discovery_started = time.monotonic() - placing_s
    endpoints, key = None, None
    if isinstance(placement, OnNodes):
        endpoints, key = placement.endpoints, placement.key
    watch = None
    if isinstance(placement, OnNodes) and placement.watch:
        from .cluster import start_job_watch
        from .common import interface_spec

        watch = start_job_watch(interface_spec(args), placement.key)
    dashboard = None
    reader = _ReaderWatch(enabled=not args.output and not stdout_tty)
    answer = _Answer(args, program, progress, reader, stdout_tty)
    try:
        if args.dashboard:
            dashboard = _job_dashboard(program, endpoints, key, cluster)
        summary = run_job(program, inputs, opts, answer.consume, endpoints=endpoints, key=key,
                          reporter=progress, discover=watch.endpoints if watch else None,
                          shared_fs=args.shared_fs, cluster=cluster)
    except KeyboardInterrupt:
        progress.stop()
        if reader.gone:  # the job was cancelled on every node because nobody reads it
            log.debug("the reader of standard output went away: the job was cancelled")
            _discard_stdout()
            return EXIT_OK
        raise Interrupted("interrupted: the job was cancelled on every node") from None
    finally:
        reader.close()
        progress.stop()
        if watch is not None:
            watch.close()
        if dashboard is not None:
            dashboard.close()
        if cluster is not None:
            cluster.close()  # a no-op when the job ran: run_job closed it
    summary.elapsed_s = time.monotonic() - started
    bad = summary.counters.get("invalid_utf8", 0)
    if bad:
        print(f"pymr: warning: invalid UTF-8: {bad} byte sequence(s) replaced by U+FFFD",
              file=sys.stderr)
    if not args.quiet:
        _show_result(summary, [(thaw(k), thaw(v)) for k, v in answer.top], program.fields,
                     stdout_tty)
    return EXIT_OK


class _Answer:
    """Where the job's records go: ``-o FILE``, ``-o DIR/`` (part files), a pipe, or the
    terminal table (its first ``--top`` records, also kept for the table after ``-o``)."""

    def __init__(self, args: argparse.Namespace, program: Any, progress: _Progress,
                 reader: _ReaderWatch, stdout_tty: bool) -> None:
        self.args = args
        self.program = program
        self.progress = progress
        self.reader = reader
        self.stdout_tty = stdout_tty
        self.top_n = args.top or 20
        self.top: list[tuple[Any, Any]] = []

    def writer(self, records: Iterator[tuple[Any, Any]], out: BinaryIO) -> int:
        from ..engine.output import write_json, write_tsv

        if self.args.format == "json":
            return write_json(records, out, self.program.fields)
        return write_tsv(records, out)

    def keep_top(self, records: Iterator[tuple[Any, Any]],
                 shown: Callable[[Any], Any] | None = None) -> Iterator[tuple[Any, Any]]:
        """The records, unchanged, keeping what the terminal table shows of the first ones
        (``shown``: of a value; by default ``_preview``)."""
        if not self.stdout_tty:  # the table is shown on a terminal only
            yield from records
            return
        shown = shown or _preview
        top, top_n = self.top, self.top_n
        for key, value in records:
            if len(top) < top_n:
                top.append((key, shown(value)))
            yield key, value

    def keep_top_lines(self, records: Iterator[tuple[Any, bytes]]
                       ) -> Iterator[tuple[Any, bytes]]:
        """``keep_top`` of (key, formatted line) records: the table shows the line's value."""
        from ..engine.output import line_value

        return self.keep_top(records, lambda line: line_value(line, CELL_CHARS))

    def consume(self, records: Any, summary: JobSummary) -> None:
        from ..engine.output import atomic_output, write_lines
        from ..engine.partfiles import is_dir_output, write_parts

        args, program, top = self.args, self.program, self.top
        self.reader.disarm()  # from here a reader that leaves is a BrokenPipeError, below
        self.progress.stop()
        # TSV lines are formatted by the reducers, in parallel, when the master needs no
        # value to order the records (part files; jobs ordered by key)
        lines = args.format == "tsv"
        if args.output and is_dir_output(args.output):
            meta = {"job": program.spec.name, "order": program.order,
                    "fields": list(program.fields), "format": args.format,
                    "key_types": records.key_types, "value_types": records.value_types}
            if lines:
                write_parts(args.output, records.tsv_lines_by_partition(), write_lines, meta)
            else:
                write_parts(args.output, records.by_partition(), self.writer, meta)
        elif args.output:
            with atomic_output(args.output) as f:
                if lines and records.order == "key":
                    write_lines(self.keep_top_lines(records.tsv_lines()), f)
                else:
                    self.writer(self.keep_top(records), f)
        elif self.stdout_tty:
            for key, value in records:
                top.append((key, _preview(value)))
                if len(top) >= self.top_n:
                    break
        else:
            by_line = lines and records.order == "key"
            source = records.tsv_lines() if by_line else records
            limited = source if args.top is None else _first(source, args.top)
            out: BinaryIO = sys.stdout.buffer
            try:
                if by_line:
                    write_lines(limited, out)
                else:
                    self.writer(limited, out)
                out.flush()
            except BrokenPipeError:
                # `pymr job ... | head`: the reader has all it wants.
                _discard_stdout()


def _job_dashboard(program: Any, endpoints: list[str] | None, key: Any,
                   cluster: LocalCluster | None) -> Any:
    """``--dashboard``: the job's page over its nodes. An embedded cluster's start is waited
    for here, so that the page knows its nodes before the job begins."""
    from .dashboard import start_job_dashboard

    if cluster is not None:
        cluster.wait_started()  # launched by _launch_embedded; now its endpoints
        endpoints, key = cluster.control_endpoints, cluster.key
    try:
        return start_job_dashboard(key, list(endpoints or []), program.spec.name)
    except BaseException:
        if cluster is not None:
            cluster.close()
        raise


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _discard_stdout() -> None:
    """The reader of stdout is gone: what is left to write (and the final flush) goes to
    /dev/null, so the exit is the quiet 0 of ``pymr job ... | head``."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


class _ReaderWatch:
    """``pymr job ... | head``, or a reader that quits before the answer is ready: when
    stdout is a pipe, a thread waits (``poll``, no busy loop) for its read end to close
    while the job runs, and then cancels the job as Ctrl-C does, so every node stops at
    once instead of mapping, reducing and fetching for nobody. Once the answer is being
    written (``disarm``), a closed pipe is a ``BrokenPipeError`` of the write instead."""

    def __init__(self, enabled: bool) -> None:
        import threading

        self.gone = False
        self._armed = True
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if not enabled:
            return
        try:
            fd = sys.stdout.fileno()
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                return
        except (OSError, ValueError, AttributeError):  # not a real file (a test's capture)
            return
        self._thread = threading.Thread(target=self._watch, args=(fd,), daemon=True,
                                        name="pymr-stdout-reader")
        self._thread.start()

    def _watch(self, fd: int) -> None:
        import _thread
        import select

        poller = select.poll()
        poller.register(fd, select.POLLERR)  # a pipe's write end: POLLERR once unread
        while not self._stop.is_set():
            events = poller.poll(250)
            if not events:
                continue
            with self._lock:
                if self._armed and events[0][1] & (select.POLLERR | select.POLLHUP):
                    self.gone = True
                    _thread.interrupt_main()  # a KeyboardInterrupt: the job is cancelled
            return

    def disarm(self) -> None:
        with self._lock:
            self._armed = False

    def close(self) -> None:
        self.disarm()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def _first(records: Iterator[tuple[Any, Any]], n: int) -> Iterator[tuple[Any, Any]]:
    for i, rec in enumerate(records):
        if i >= n:
            return
        yield rec


def _show_result(summary: JobSummary, top: list[tuple[Any, Any]], fields: tuple[str, str],
                 stdout_tty: bool) -> None:
    mb = summary.input_bytes / MiB
    rate = mb / summary.elapsed_s if summary.elapsed_s > 0 else 0.0
    counters = "".join(f", {name.replace('_', ' ')} {n:,}"
                       for name, n in sorted(summary.counters.items()))
    line = (f"{count_of(summary.records, 'record')}{counters}; "
            f"{count_of(summary.tasks, 'split')} ({mb:,.1f} MiB) on "
            f"{count_of(len(summary.nodes), 'node')} "
            f"in {summary.elapsed_s:.2f} s ({rate:,.1f} MiB/s)")
    if summary.records == 0:
        line = "no records (the input is empty, or the job emitted nothing); " + line
    if summary.spilled:
        spilled = sum(b for b, _ in summary.spilled.values())
        runs = sum(r for _, r in summary.spilled.values())
        line += f"; spilled {spilled / MiB:,.1f} MiB in {count_of(runs, 'run')}"
    faults = [f"{n} {what}" for n, what in (
        (len(summary.nodes_lost), "node(s) lost (" + ", ".join(summary.nodes_lost) + ")"),
        (summary.retries, "task retry(ies)"), (summary.backups, "backup attempt(s)"),
        (summary.cancelled, "attempt(s) cancelled"),
        (summary.resends, "map output(s) re-sent to a reducer"),
        (summary.fetches_asked_again, "fetch(es) asked again")) if n]
    if faults:
        line += "; " + ", ".join(faults)
    if stdout_tty:
        from rich.console import Console
        from rich.table import Table

        console = Console()
        if top:
            table = Table(title=f"first {len(top)} of {summary.records:,}")
            table.add_column(fields[0])
            table.add_column(fields[1], justify="right")
            for key, value in top:
                table.add_row(_cell(key), _cell(value))
            console.print(table)
        console.print(line)
    elif sys.stderr.isatty():
        from rich.console import Console

        Console(stderr=True).print(line)
    else:
        print(f"pymr: {line}", file=sys.stderr)


#: Characters of a value the terminal table shows (the output gets it whole).
CELL_CHARS = 200


def _preview(value: Any) -> Any:
    """What the terminal table keeps of a value: scalars and short values as they are; a
    long sequence, string or bytes cut, so that the table never holds (or formats) an
    inverted index's list of millions of postings whole."""
    if type(value) in (list, tuple) and len(value) > CELL_CHARS // 8:
        from ..engine.output import tsv_field

        head = tsv_field(value[:CELL_CHARS // 8]).decode("utf-8", "replace")
        return f"{head[:-1]}, ... ({len(value):,} items){head[-1]}"
    if type(value) in (str, bytes) and len(value) > CELL_CHARS:
        return value[:CELL_CHARS] + ("..." if type(value) is str else b"...")
    return value


def _cell(x: Any) -> str:
    """A key or value in the terminal table (markup-free text)."""
    from rich.markup import escape

    from ..engine.output import tsv_field

    if type(x) is int:
        return f"{x:,}"
    return escape(tsv_field(x).decode("utf-8", "replace"))


# ---------------------------------------------------------------- jobs and job help


def cmd_cat(args: argparse.Namespace) -> int:
    from ..engine.partfiles import cat_parts

    out: BinaryIO = sys.stdout.buffer
    try:
        cat_parts(args.directory, out)
        out.flush()
    except BrokenPipeError:
        _discard_stdout()
    except OSError as exc:
        raise UsageError(f"{args.directory}: {exc.strerror or exc}") from None
    return EXIT_OK


def cmd_jobs(args: argparse.Namespace) -> int:
    from ..jobs import BUILTIN_JOBS, builtin_spec
    from ..jobs.program import load_program

    rows = []
    for name in BUILTIN_JOBS:
        program = load_program(builtin_spec(name), _defaults_only(builtin_spec(name)),
                               run_setup=False)
        rows.append((name, program.summary_line()))
    width = max(len(n) for n, _ in rows)
    for name, line in rows:
        print(f"{name:<{width}}  {line}")
    print("\nA job file of your own: pymr job ./myjob.py PATH... (see 'pymr job JOB --help')",
          file=sys.stderr if not sys.stdout.isatty() else sys.stdout)
    return EXIT_OK


def _defaults_only(spec: Any) -> dict[str, str]:
    """Parameters that let a job with required ones load for its help (placeholders)."""
    import ast

    try:
        tree = ast.parse(spec.source)
    except SyntaxError:
        return {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "PARAMS" for t in node.targets):
            try:
                declared = ast.literal_eval(node.value)
            except ValueError:
                return {}
            return {k: "" for k, v in declared.items() if v is None}
    return {}


def _job_help_request(argv: list[str]) -> str | None:
    """``pymr job JOB ... --help``: the job named, when help is asked for with one."""
    if len(argv) < 2 or argv[0] != "job" or not ({"-h", "--help"} & set(argv)):
        return None
    job = argv[1]
    if job.startswith("-"):
        return None
    return job


def _show_job_help(job: str) -> int:
    from ..jobs.program import load_program, resolve_job

    spec = resolve_job(job)
    program = load_program(spec, _defaults_only(spec), run_setup=False)
    out = [f"usage: pymr job {job} PATH... [-p NAME=VALUE]... [options]", ""]
    doc = program.doc.strip()
    out += [doc if doc else "(the job has no docstring)", ""]
    if program.declared_params:
        out.append("parameters (-p NAME=VALUE):")
        for name, default in sorted(program.declared_params.items()):
            out.append(f"  {name:<16} " + ("required" if default is None
                                           else f"default: {default!r}"))
        out.append("")
    order = ("by value, largest first (then by key)" if program.order == "value"
             else "by key")
    out.append(f"output: {program.fields[0]}<TAB>{program.fields[1]} lines, {order}")
    out.append("options of every job: pymr job --help")
    print("\n".join(out))
    return EXIT_OK
