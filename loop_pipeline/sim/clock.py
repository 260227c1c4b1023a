"""Simulated time: microseconds since the Unix epoch (UTC), and random delays."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np

MICROS_PER_SECOND = 1_000_000
MICROS_PER_HOUR = 3600 * MICROS_PER_SECOND
MICROS_PER_DAY = 24 * MICROS_PER_HOUR
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def iso(micros: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS.ffffffZ``, the landing files' timestamp format."""
    return (EPOCH + dt.timedelta(microseconds=int(micros))).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def day_of(micros: int) -> dt.date:
    return (EPOCH + dt.timedelta(microseconds=int(micros))).date()


def start_of_day(day: dt.date) -> int:
    """Midnight UTC of ``day`` in microseconds."""
    midnight = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
    return int((midnight - EPOCH) // dt.timedelta(microseconds=1))


def delay(rng: np.random.Generator, median: float, sigma: float) -> int:
    """A reaction delay in microseconds: log-normal around ``median`` seconds, within [0.2 s, 30 min]."""
    value = min(max(median * math.exp(sigma * float(rng.standard_normal())), 0.2), 1800.0)
    return int(value * MICROS_PER_SECOND)
