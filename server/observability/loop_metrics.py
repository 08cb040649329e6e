"""Counters and histograms changed on the event loop's thread only: no lock per increment.

prometheus_client guards every value with a ``threading.Lock`` and re-checks, on every ``inc``
and ``observe``, that the metric has its labels; a histogram finds its bucket with a Python loop.
The per-request series (``puente_requests_total``, the durations, the token counts, the keys'
counts) are all changed in ``Pipeline.finish`` and ``Access.on_request_end``, which run on the
event loop: one thread, so the lock guards nothing there. These classes keep prometheus_client's
metric objects, registration and exposition (the same samples, ``_created`` included) and swap
only the stored value for a plain float, and add ``add`` / ``record``: an increment and an
observation without the checks, for a child already labelled.

Only for series no other thread changes (the SQLite threads never touch metrics; the usage
writer counts its rows back on the loop). A scrape may read from another thread: reading a
float attribute is atomic under the GIL, as reading under the lock was.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from prometheus_client import Counter, Histogram


class LoopValue:
    """The value class prometheus_client's children call (``inc``, ``set``, ``get`` and the
    exemplar pair), as a plain float."""

    __slots__ = ("_exemplar", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self._exemplar: Any = None

    def inc(self, amount: float) -> None:
        self.value += amount

    def set(self, value: float, timestamp: float | None = None) -> None:
        self.value = value

    def set_exemplar(self, exemplar: Any) -> None:
        self._exemplar = exemplar

    def get(self) -> float:
        return self.value

    def get_exemplar(self) -> Any:
        return self._exemplar


class LoopCounter(Counter):
    """A ``Counter`` whose children count on the event loop's thread only."""

    def _metric_init(self) -> None:
        super()._metric_init()
        self._value = LoopValue()

    def add(self, amount: float = 1) -> None:
        """``inc`` on a labelled child, for the hot path: no checks (``amount`` ≥ 0)."""
        self._value.value += amount


class LoopHistogram(Histogram):
    """A ``Histogram`` whose children observe on the event loop's thread only."""

    def _metric_init(self) -> None:
        super()._metric_init()
        self._sum = LoopValue()
        self._buckets = [LoopValue() for _ in self._upper_bounds]

    def record(self, amount: float) -> None:
        """``observe`` on a labelled child, for the hot path: the bucket found by bisection
        (the first bound ≥ ``amount``, as ``observe``'s loop finds it)."""
        self._sum.value += amount
        self._buckets[bisect_left(self._upper_bounds, amount)].value += 1
