"""Log lines with the request id on each, to stderr; uvicorn's access log is replaced by ours."""

from __future__ import annotations

import logging
import sys
import time

from server.observability.request_context import RequestIdFilter

FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


class _Formatter(logging.Formatter):
    """``logging.Formatter`` with the date and time of the second formatted once per second, not
    once per line: Puente writes a line per request (``Pipeline.finish``), and ``strftime`` was
    a third of its cost (bench/README.md, "Core path cuts")."""

    def __init__(self, fmt: str) -> None:
        super().__init__(fmt)
        self._second = -1
        self._text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._text = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = second
        return f"{self._text},{int(record.msecs):03d}"  # as logging's default_msec_format


def configure_logging(level: str = "info") -> None:
    # The format shows none of these, and each is looked up for every record made (the
    # caller's file and line by walking the stack: ``_srcfile = None`` is logging's own switch,
    # documented under "Optimization" in the logging HOWTO).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(FORMAT))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    # The vendor SDKs' HTTP client logs every request line at INFO; Puente logs each request once.
    for name in ("httpx", "httpx2"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
