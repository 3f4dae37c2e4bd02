"""Strict ISO 8601 parsing and formatting for instants, durations and intervals.

The REST API exchanges times as ISO 8601 text. This module accepts a deliberately
small, unambiguous subset of the standard and rejects everything else with an
:class:`Iso8601Error` whose message quotes the offending text and says what is wrong,
so that a client can fix its request without reading the broker's source.

Supported forms:

* instants: ``YYYY-MM-DDTHH:MM[:SS[.fraction]]`` followed by ``Z`` or an offset
  ``±HH:MM``, ``±HHMM`` or ``±HH``; always returned as timezone-aware UTC;
* durations: ``PnDTnHnMnS`` (any subset, at least one component) or ``PnW``;
* intervals: ``start/end``, ``start/duration`` or ``duration/end``, where an end
  point may also be a plain ``YYYY-MM-DD`` date meaning midnight UTC.

Only the standard library is used.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

__all__ = [
    "MAX_DURATION",
    "Interval",
    "Iso8601Error",
    "duration_to_millisecond",
    "format_duration",
    "format_instant",
    "format_interval",
    "parse_duration",
    "parse_instant",
    "parse_interval",
    "to_millisecond",
]

#: Longest duration accepted or produced. Guards against absurd values (and the
#: arithmetic overflow they would cause) while still allowing a full leap year.
MAX_DURATION = timedelta(days=366)


class Iso8601Error(ValueError):
    """Raised with a human readable reason, e.g. "'PT' has no duration components".

    It subclasses :class:`ValueError` so callers validating generic input can catch
    either; every parse or format failure in this module raises this type.
    """


# ASCII [0-9] rather than \d: \d would also match other scripts' digits (e.g. Arabic-Indic),
# which int() happily converts, silently widening what we accept.
_INSTANT_RE = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})"
    r"(?:[Tt](?P<hour>[0-9]{2}):(?P<minute>[0-9]{2})"
    r"(?::(?P<second>[0-9]{2})(?:[.,](?P<fraction>[0-9]+))?)?"
    r"(?P<zone>[Zz]|(?P<sign>[+-])(?P<off_hour>[0-9]{2})(?::?(?P<off_minute>[0-9]{2}))?)?)?"
)

_NUMBER = r"[0-9]+(?:[.,][0-9]+)?"
_DURATION_RE = re.compile(
    rf"P(?:(?P<weeks>{_NUMBER})W"
    rf"|(?:(?P<years>{_NUMBER})Y)?(?:(?P<months>{_NUMBER})M)?(?:(?P<days>{_NUMBER})D)?"
    rf"(?P<time>T(?:(?P<hours>{_NUMBER})H)?(?:(?P<minutes>{_NUMBER})M)?"
    rf"(?:(?P<seconds>{_NUMBER})S)?)?)"
)

# Duration components in order, largest first, with their length in microseconds.
# Integer microseconds keep the arithmetic exact: no float rounding of '0.1'.
_US_PER_SECOND = 1_000_000
_DURATION_UNITS: tuple[tuple[str, str, int], ...] = (
    ("weeks", "weeks", 7 * 86_400 * _US_PER_SECOND),
    ("days", "days", 86_400 * _US_PER_SECOND),
    ("hours", "hours", 3_600 * _US_PER_SECOND),
    ("minutes", "minutes", 60 * _US_PER_SECOND),
    ("seconds", "seconds", _US_PER_SECOND),
)

# Nanoseconds are the finest resolution real clients emit (Go, Java); more digits than
# that is almost certainly garbage, and capping the length keeps int() conversions cheap.
_MAX_FRACTION_DIGITS = 9
# Twelve integer digits already exceed MAX_DURATION in every unit; refusing longer runs
# early also keeps int() away from its 4300 digit limit (which raises a bare ValueError).
_MAX_INTEGER_DIGITS = 12
# Long input is echoed back in error messages; clip it so a hostile request cannot
# make the broker log or return megabytes.
_MAX_QUOTED = 64


def _quote(text: str) -> str:
    """Quote *text* for an error message, escaping control characters and clipping it."""
    if len(text) > _MAX_QUOTED:
        text = text[:_MAX_QUOTED] + "..."
    return repr(text)


def _check_text(text: str, label: str) -> None:
    """Reject empty and whitespace-padded text, which the grammars below never accept."""
    if not text:
        raise Iso8601Error(f"{label} is empty")
    if text != text.strip():
        raise Iso8601Error(f"{label} {_quote(text)} has leading or trailing whitespace")


def _fraction_to_micro(digits: str) -> int:
    """Convert the digits after a decimal mark to microseconds, truncating finer digits."""
    # Truncation (not rounding) cannot carry into the next second, so 59.9999999 stays
    # within second 59 and never needs re-normalising.
    return int((digits + "000000")[:6])


def _parse_point(text: str, label: str, *, allow_date: bool) -> datetime:
    """Parse an instant (or, when *allow_date*, a plain date) and convert it to UTC.

    *label* names the value in error messages, e.g. "instant" or "interval start".
    """
    _check_text(text, label)
    quoted = _quote(text)
    match = _INSTANT_RE.fullmatch(text)
    if match is None:
        expected = "YYYY-MM-DDTHH:MM[:SS[.fff]] followed by Z or an offset like +01:00"
        if allow_date:
            expected = "YYYY-MM-DD or " + expected
        raise Iso8601Error(f"{label} {quoted} is not an ISO 8601 instant; expected {expected}")

    year, month, day = int(match["year"]), int(match["month"]), int(match["day"])
    if year == 0:
        raise Iso8601Error(f"{label} {quoted} has year 0000; years run 0001-9999")
    if not 1 <= month <= 12:
        raise Iso8601Error(f"{label} {quoted} has month {match['month']}; months run 01-12")
    days_in_month = calendar.monthrange(year, month)[1]
    if not 1 <= day <= days_in_month:
        raise Iso8601Error(
            f"{label} {quoted} has day {match['day']}, but {match['year']}-{match['month']} "
            f"has {days_in_month} days"
        )

    if match["hour"] is None:
        if not allow_date:
            raise Iso8601Error(f"{label} {quoted} has no time; add one, e.g. T00:00:00Z")
        # A plain date names a whole UTC day; as an interval end point that is its midnight.
        return datetime(year, month, day, tzinfo=UTC)

    if match["zone"] is None:
        # Sites run in different timezones, so guessing one would silently shift jobs.
        raise Iso8601Error(f"{label} {quoted} has no timezone; add Z or an offset")

    hour, minute = int(match["hour"]), int(match["minute"])
    second = int(match["second"]) if match["second"] is not None else 0
    if hour == 24:
        raise Iso8601Error(f"{label} {quoted} has hour 24; use 00:00 of the next day")
    if hour > 23:
        raise Iso8601Error(f"{label} {quoted} has hour {match['hour']}; hours run 00-23")
    if minute > 59:
        raise Iso8601Error(f"{label} {quoted} has minute {match['minute']}; minutes run 00-59")
    if second == 60:
        raise Iso8601Error(f"{label} {quoted} has second 60; leap seconds are not supported")
    if second > 59:
        raise Iso8601Error(f"{label} {quoted} has second {match['second']}; seconds run 00-59")

    fraction = match["fraction"]
    if fraction is not None and len(fraction) > _MAX_FRACTION_DIGITS:
        raise Iso8601Error(
            f"{label} {quoted} has more than {_MAX_FRACTION_DIGITS} fractional second digits"
        )
    microsecond = _fraction_to_micro(fraction) if fraction is not None else 0

    if match["zone"] in ("Z", "z"):
        tz = UTC
    else:
        off_hour = int(match["off_hour"])
        off_minute = int(match["off_minute"]) if match["off_minute"] is not None else 0
        if off_hour > 23 or off_minute > 59:
            raise Iso8601Error(f"{label} {quoted} has an out of range UTC offset")
        offset = timedelta(hours=off_hour, minutes=off_minute)
        tz = timezone(-offset if match["sign"] == "-" else offset)

    local = datetime(year, month, day, hour, minute, second, microsecond, tzinfo=tz)
    try:
        return local.astimezone(UTC)
    except OverflowError:
        # e.g. 0001-01-01T00:00+01:00 lies in year 0 once converted to UTC.
        raise Iso8601Error(
            f"{label} {quoted} falls outside years 0001-9999 once converted to UTC"
        ) from None


def parse_instant(text: str) -> datetime:
    """Parse an ISO 8601 instant with an explicit timezone and return it in UTC.

    Accepts ``YYYY-MM-DDTHH:MM[:SS[.fraction]]`` followed by ``Z`` or an offset
    ``±HH:MM``, ``±HHMM`` or ``±HH``; ``t`` and ``z`` may be lowercase (as RFC 3339
    allows), and the decimal mark may be ``.`` or ``,``. Fractions finer than a
    microsecond are truncated. A plain date, a missing timezone, whitespace and out of
    range fields are refused.

    Raises:
        Iso8601Error: if *text* is not such an instant.
    """
    return _parse_point(text, "instant", allow_date=False)


def to_millisecond(value: datetime) -> datetime:
    """``value`` rounded to the nearest millisecond, as answers write instants.

    Planning adds float seconds, which leaves artefacts such as ``…34.999990Z``;
    every instant and duration a client reads is rounded the same way.
    """
    micro = value.microsecond
    rounded = value.replace(microsecond=0) + timedelta(milliseconds=round(micro / 1000))
    return rounded


def format_stamp(value: datetime) -> str:
    """``value`` as the API writes recorded instants: UTC, to the millisecond."""
    return format_instant(to_millisecond(value))


def duration_to_millisecond(value: timedelta) -> timedelta:
    """``value`` rounded to the nearest millisecond (see :func:`to_millisecond`)."""
    return timedelta(milliseconds=round(value / timedelta(milliseconds=1)))


def format_instant(value: datetime) -> str:
    """Format an aware datetime as ``YYYY-MM-DDTHH:MM:SS[.fff]Z`` in UTC.

    The fraction is omitted when the microsecond is zero and given as milliseconds
    (``.mmm``) when that is exact; otherwise all six digits are written, so that
    ``parse_instant(format_instant(v)) == v`` always holds.

    Raises:
        Iso8601Error: if *value* is naive or does not fit in years 0001-9999 in UTC.
    """
    if value.tzinfo is not UTC and (value.tzinfo is None or value.utcoffset() is None):
        # A naive value has no defined instant; formatting it as UTC could be hours off.
        raise Iso8601Error(f"cannot format naive datetime {value.isoformat()!r}; attach a tzinfo")
    try:
        # Most values are UTC already; converting is the slow part, so skip it then.
        utc = value if value.tzinfo is UTC else value.astimezone(UTC)
    except OverflowError:
        raise Iso8601Error(
            f"datetime {value.isoformat()!r} falls outside years 0001-9999 in UTC"
        ) from None
    micro = utc.microsecond
    spec = "seconds" if micro == 0 else "milliseconds" if micro % 1000 == 0 else "microseconds"
    # A UTC value's isoformat ends in '+00:00': cut that rather than copying the
    # value without its tzinfo (replace() was the slow part of this function).
    return utc.isoformat(timespec=spec)[:-6] + "Z"


def _parse_duration(text: str, label: str) -> timedelta:
    """Parse a duration; *label* names it in error messages."""
    _check_text(text, label)
    quoted = _quote(text)
    if text[0] in "-−":
        raise Iso8601Error(f"{label} {quoted} is negative; durations must not be negative")
    if text != text.upper() and _DURATION_RE.fullmatch(text.upper()):
        # Only worth a specific hint when uppercasing is the whole fix.
        raise Iso8601Error(f"{label} {quoted} must use uppercase designators (P, W, D, T, H, M, S)")
    match = _DURATION_RE.fullmatch(text)
    if match is None:
        if "W" in text:
            raise Iso8601Error(
                f"{label} {quoted} combines weeks with other components; use PnW or PnDTnHnMnS"
            )
        raise Iso8601Error(f"{label} {quoted} is not an ISO 8601 duration; expected PnDTnHnMnS")

    for name in ("years", "months"):
        if match[name] is not None:
            # A month is 28-31 days and a year 365 or 366, so the value would depend on
            # the start date; days are unambiguous.
            raise Iso8601Error(
                f"{label} {quoted} uses {name}, whose length varies; use days instead (e.g. P30D)"
            )

    present = [(name, match[group], unit) for group, name, unit in _DURATION_UNITS if match[group]]
    if not present:
        raise Iso8601Error(f"{quoted} has no duration components")
    if match["time"] == "T":
        raise Iso8601Error(f"{label} {quoted} has 'T' but no hours, minutes or seconds after it")

    total = 0
    last = len(present) - 1
    for index, (name, number, unit) in enumerate(present):
        whole, mark, fraction = number.replace(",", ".").partition(".")
        if mark and index != last:
            raise Iso8601Error(
                f"{label} {quoted} has a fraction in {name}; "
                "only the smallest component may have one"
            )
        if len(whole) > _MAX_INTEGER_DIGITS:
            raise Iso8601Error(f"{label} {quoted} is longer than the {MAX_DURATION.days} day limit")
        if len(fraction) > _MAX_FRACTION_DIGITS:
            raise Iso8601Error(
                f"{label} {quoted} has more than {_MAX_FRACTION_DIGITS} fractional digits"
            )
        total += int(whole) * unit
        if fraction:
            # Exact integer arithmetic, truncated below one microsecond like instants.
            total += int(fraction) * unit // 10 ** len(fraction)

    result = timedelta(microseconds=total)
    if result > MAX_DURATION:
        raise Iso8601Error(f"{label} {quoted} is longer than the {MAX_DURATION.days} day limit")
    return result


def parse_duration(text: str) -> timedelta:
    """Parse an ISO 8601 duration such as ``PT10M``, ``P1DT2H``, ``PT0.5S`` or ``P2W``.

    A day is exactly 24 hours. Years and months are refused because their length
    varies; so are empty forms (``P``, ``PT``, ``P1DT``), negative durations, fractions
    on anything but the smallest component, and durations over 366 days. The decimal
    mark may be ``.`` or ``,``; fractions finer than a microsecond are truncated.

    Raises:
        Iso8601Error: if *text* is not such a duration.
    """
    return _parse_duration(text, "duration")


def format_duration(value: timedelta) -> str:
    """Format a non-negative timedelta canonically, e.g. ``PT0S``, ``PT2M10S``, ``P1DT2H``.

    Days are written as days (never weeks), zero components are omitted, and seconds
    carry a fraction only when needed, trimmed of trailing zeros (``PT0.5S``).

    Raises:
        Iso8601Error: if *value* is negative or longer than 366 days, which
            :func:`parse_duration` would refuse.
    """
    if value < timedelta(0):
        raise Iso8601Error(
            f"cannot format negative duration {value}; durations must not be negative"
        )
    if value > MAX_DURATION:
        raise Iso8601Error(
            f"cannot format duration {value}; it is longer than the {MAX_DURATION.days} day limit"
        )
    seconds_total, micro = divmod(value // timedelta(microseconds=1), _US_PER_SECOND)
    days, seconds_total = divmod(seconds_total, 86_400)
    hours, seconds_total = divmod(seconds_total, 3_600)
    minutes, seconds = divmod(seconds_total, 60)

    date_part = f"{days}D" if days else ""
    time_part = ""
    if hours:
        time_part += f"{hours}H"
    if minutes:
        time_part += f"{minutes}M"
    if seconds or micro:
        fraction = f".{micro:06d}".rstrip("0") if micro else ""
        time_part += f"{seconds}{fraction}S"
    if not date_part and not time_part:
        return "PT0S"
    return "P" + date_part + ("T" + time_part if time_part else "")


@dataclass(frozen=True, slots=True)
class Interval:
    """A closed time interval between two UTC instants; ``end`` is never before ``start``.

    Aware datetimes in any timezone are accepted and normalised to UTC, so that
    comparisons and formatting never depend on the caller's zone.
    """

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        """Normalise both ends to UTC and check that the interval is not reversed."""
        for name in ("start", "end"):
            value: datetime = getattr(self, name)
            if value.tzinfo is not UTC and (value.tzinfo is None or value.utcoffset() is None):
                raise Iso8601Error(f"interval {name} {value.isoformat()!r} is a naive datetime")
            try:
                utc = value.astimezone(UTC)
            except OverflowError:
                raise Iso8601Error(
                    f"interval {name} {value.isoformat()!r} falls outside years 0001-9999 in UTC"
                ) from None
            # The dataclass is frozen; object.__setattr__ is the sanctioned way round that.
            object.__setattr__(self, name, utc)
        if self.end < self.start:
            raise Iso8601Error(
                f"interval end {self.end.isoformat()!r} is before its start "
                f"{self.start.isoformat()!r}"
            )

    @property
    def duration(self) -> timedelta:
        """The length of the interval (zero for an instant-like interval)."""
        return self.end - self.start


def _is_duration(part: str) -> bool:
    """Tell durations from instants by their leading designator (after any sign)."""
    return part.lstrip("+-−")[:1] in ("P", "p")


def parse_interval(text: str, *, now: datetime | None = None) -> Interval:
    """Parse an ISO 8601 interval: ``start/end``, ``start/duration`` or ``duration/end``.

    Each end point is an instant as accepted by :func:`parse_instant` or a plain
    ``YYYY-MM-DD`` date meaning midnight UTC; the duration is as accepted by
    :func:`parse_duration`. A zero length interval such as ``start/PT0S`` is valid; an
    end before the start is not.

    *now* is accepted for callers that resolve open intervals against a clock; no
    supported form needs it yet, so it is currently ignored.

    Raises:
        Iso8601Error: if *text* is not such an interval.
    """
    del now  # reserved, see docstring
    _check_text(text, "interval")
    quoted = _quote(text)
    if "/" not in text:
        raise Iso8601Error(f"an interval needs two parts separated by '/', got {quoted}")
    first, _, second = text.partition("/")
    if "/" in second:
        raise Iso8601Error(f"interval {quoted} has more than one '/'")
    if not first:
        raise Iso8601Error(f"interval {quoted} has nothing before '/'")
    if not second:
        raise Iso8601Error(f"interval {quoted} has nothing after '/'")

    first_is_duration, second_is_duration = _is_duration(first), _is_duration(second)
    if first_is_duration and second_is_duration:
        raise Iso8601Error(
            f"interval {quoted} has two durations; at least one part must be an instant"
        )

    try:
        if first_is_duration:
            end = _parse_point(second, "interval end", allow_date=True)
            start = end - _parse_duration(first, "interval duration")
        elif second_is_duration:
            start = _parse_point(first, "interval start", allow_date=True)
            end = start + _parse_duration(second, "interval duration")
        else:
            start = _parse_point(first, "interval start", allow_date=True)
            end = _parse_point(second, "interval end", allow_date=True)
    except OverflowError:
        raise Iso8601Error(f"interval {quoted} reaches outside years 0001-9999") from None

    if end < start:
        raise Iso8601Error(f"interval {quoted} ends before it starts")
    return Interval(start, end)


def format_interval(value: Interval) -> str:
    """Format an interval as ``start/end``, each written by :func:`format_instant`."""
    return f"{format_instant(value.start)}/{format_instant(value.end)}"
