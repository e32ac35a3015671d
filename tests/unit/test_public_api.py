"""``pymr`` exports its public API, and importing ``pymr`` alone loads no engine."""

from __future__ import annotations

import subprocess
import sys

import pymr
from pymr import errors
from pymr.config import JobOptions
from pymr.runtime import runner


def test_every_public_name_resolves() -> None:
    for name in pymr.__all__:
        assert getattr(pymr, name) is not None
    assert pymr.run is runner.run
    assert pymr.JobOptions is JobOptions
    assert pymr.UsageError is errors.UsageError


def test_unknown_name_is_an_attribute_error() -> None:
    try:
        pymr.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("pymr.no_such_name resolved")


def test_import_pymr_loads_no_engine() -> None:
    code = ("import sys, pymr, pymr.api; "
            "print(sorted(m for m in ('pymr.runtime.runner', 'pymr.runtime.master', 'zmq')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
