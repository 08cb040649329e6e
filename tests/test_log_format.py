"""The request log line's formatter caches the second's date and time (bench/README.md, "Core
path cuts"); its lines must be exactly those of ``logging.Formatter`` with the same format."""

from __future__ import annotations

import logging
import re
import subprocess
import sys

from server.observability.logs import FORMAT, _Formatter


def _record(created: float) -> logging.LogRecord:
    record = logging.LogRecord("puente.gateway", logging.INFO, __file__, 1, "a %s", ("b",), None)
    record.created = created
    record.msecs = int((created - int(created)) * 1000)
    record.request_id = "rid"
    return record


def test_lines_are_those_of_the_standard_formatter_across_seconds() -> None:
    ours, standard = _Formatter(FORMAT), logging.Formatter(FORMAT)
    # Within one second, across a second, a minute, a day and back in time (a clock stepped).
    for created in (
        1_764_806_399.001,
        1_764_806_399.999,
        1_764_806_400.0,
        1_764_806_400.5,
        1_764_806_460.25,
        1_764_892_800.75,
        1_764_806_399.5,
    ):
        record = _record(created)
        assert ours.format(record) == standard.format(record)


def test_the_time_changes_with_the_second() -> None:
    formatter = _Formatter(FORMAT)
    first = formatter.format(_record(1_764_806_399.9))
    second = formatter.format(_record(1_764_806_400.1))
    assert first.split(" ")[1] != second.split(" ")[1]


def test_a_line_after_configure_logging_reads_as_before() -> None:
    # In a child process: configure_logging changes the interpreter's logging globally.
    script = (
        "import logging\n"
        "from server.observability.logs import configure_logging\n"
        "from server.observability.request_context import request_id\n"
        "configure_logging('info')\n"
        "request_id.set('abc123')\n"
        "logging.getLogger('puente.gateway').info('chat model=%s status=%d', 'm', 200)\n"
        "logging.getLogger('puente.gateway').debug('not shown')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    when = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
    line = when + r" INFO puente.gateway \[abc123\] chat model=m status=200"
    assert re.fullmatch(line + r"\n", done.stderr), done.stderr
