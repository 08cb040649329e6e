"""UTC days and months: the periods token budgets and usage totals are counted in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache

_DAY = 86400


@lru_cache(maxsize=8)
def _names(day: int) -> tuple[str, str]:
    """A day's and its month's names, made once per day rather than on every request."""
    moment = datetime.fromtimestamp(day * _DAY, UTC)
    return moment.strftime("%Y-%m-%d"), moment.strftime("%Y-%m")


def day_of(ts: float) -> str:
    return _names(int(ts // _DAY))[0]


def month_of(ts: float) -> str:
    return _names(int(ts // _DAY))[1]


def day_start(ts: float) -> float:
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def month_start(ts: float) -> float:
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()


def until_next_day(ts: float) -> float:
    return day_start(ts) + 86400 - ts


def until_next_month(ts: float) -> float:
    first = datetime.fromtimestamp(month_start(ts), UTC)
    following = (first + timedelta(days=32)).replace(day=1)
    return following.timestamp() - ts


def day_range(since: str | None, until: str | None, days: int) -> tuple[str, str]:
    """Inclusive ``YYYY-MM-DD`` bounds: ``since``..``until`` (default today), or the last
    ``days`` days up to ``until``. ``ValueError`` for a day not written ``YYYY-MM-DD``."""
    try:
        last = datetime.strptime(until, "%Y-%m-%d") if until else datetime.now(UTC)
        if since:
            first = datetime.strptime(since, "%Y-%m-%d")
        else:
            first = last - timedelta(days=max(1, days) - 1)
    except ValueError:
        raise ValueError("days are written YYYY-MM-DD") from None
    return first.strftime("%Y-%m-%d"), last.strftime("%Y-%m-%d")
