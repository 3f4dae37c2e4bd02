"""Tests for the strict ISO 8601 parsing and formatting in talicada.schema.iso8601."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from talicada.schema.iso8601 import (
    Interval,
    Iso8601Error,
    format_duration,
    format_instant,
    format_interval,
    parse_duration,
    parse_instant,
    parse_interval,
)

# ---------------------------------------------------------------------------
# Instants: accepted forms
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-01-01T10:00Z", datetime(2025, 1, 1, 10, 0, tzinfo=UTC)),
        ("2025-01-01T10:00:30Z", datetime(2025, 1, 1, 10, 0, 30, tzinfo=UTC)),
        ("2025-01-01T10:00:30.5Z", datetime(2025, 1, 1, 10, 0, 30, 500_000, tzinfo=UTC)),
        ("2025-01-01T10:00:30,25Z", datetime(2025, 1, 1, 10, 0, 30, 250_000, tzinfo=UTC)),
        ("2025-01-01T10:00:30.123456Z", datetime(2025, 1, 1, 10, 0, 30, 123_456, tzinfo=UTC)),
        ("2025-01-01t10:00:00z", datetime(2025, 1, 1, 10, 0, tzinfo=UTC)),
        ("2025-01-01T10:00:00+02:00", datetime(2025, 1, 1, 8, 0, tzinfo=UTC)),
        ("2025-01-01T10:00:00+0230", datetime(2025, 1, 1, 7, 30, tzinfo=UTC)),
        ("2025-01-01T10:00:00-05", datetime(2025, 1, 1, 15, 0, tzinfo=UTC)),
        ("2025-01-01T10:00-00:00", datetime(2025, 1, 1, 10, 0, tzinfo=UTC)),
        ("2024-02-29T00:00:00Z", datetime(2024, 2, 29, tzinfo=UTC)),
        ("0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=UTC)),
        ("9999-12-31T23:59:59Z", datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ],
)
def test_an_instant_in_a_supported_form_is_parsed_to_utc(text: str, expected: datetime) -> None:
    result = parse_instant(text)
    assert result == expected
    assert result.tzinfo is UTC


def test_an_offset_that_crosses_midnight_moves_the_date() -> None:
    assert parse_instant("2025-03-01T01:00:00+03:00") == datetime(2025, 2, 28, 22, tzinfo=UTC)


def test_fraction_digits_beyond_microseconds_are_truncated() -> None:
    result = parse_instant("2025-01-01T10:00:59.999999999Z")
    assert result == datetime(2025, 1, 1, 10, 0, 59, 999_999, tzinfo=UTC)


# ---------------------------------------------------------------------------
# Instants: rejections
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2025-01-01T10:00:00", "has no timezone; add Z or an offset"),
        ("2025-01-01", "has no time"),
        ("", "instant is empty"),
        (" 2025-01-01T10:00:00Z", "leading or trailing whitespace"),
        ("2025-01-01T10:00:00Z\n", "leading or trailing whitespace"),
        ("2025-01-01 10:00:00Z", "is not an ISO 8601 instant"),
        ("2025-1-01T10:00:00Z", "is not an ISO 8601 instant"),
        ("25-01-01T10:00:00Z", "is not an ISO 8601 instant"),
        ("2025-01-01T10Z", "is not an ISO 8601 instant"),
        ("2025-01-01T10:00.5Z", "is not an ISO 8601 instant"),
        ("2025-01-01T10:00:00.Z", "is not an ISO 8601 instant"),
        ("2025-01-01T10:00:00+1", "is not an ISO 8601 instant"),
        ("2025-01-01T10:00:00+01:0", "is not an ISO 8601 instant"),
        ("2025-01-01T10:00:00UTC", "is not an ISO 8601 instant"),
        ("٢٠٢٥-01-01T10:00:00Z", "is not an ISO 8601 instant"),
        ("0000-01-01T00:00:00Z", "year 0000"),
        ("2025-13-01T00:00:00Z", "month 13"),
        ("2025-00-01T00:00:00Z", "month 00"),
        ("2025-02-30T00:00:00Z", "day 30, but 2025-02 has 28 days"),
        ("2023-02-29T00:00:00Z", "day 29, but 2023-02 has 28 days"),
        ("2025-04-31T00:00:00Z", "day 31, but 2025-04 has 30 days"),
        ("2025-01-00T00:00:00Z", "day 00"),
        ("2025-01-01T24:00:00Z", "hour 24; use 00:00 of the next day"),
        ("2025-01-01T25:00:00Z", "hour 25"),
        ("2025-01-01T10:60:00Z", "minute 60"),
        ("2025-01-01T23:59:60Z", "leap seconds are not supported"),
        ("2025-01-01T10:00:61Z", "second 61"),
        ("2025-01-01T10:00:00+24:00", "out of range UTC offset"),
        ("2025-01-01T10:00:00+01:60", "out of range UTC offset"),
        ("2025-01-01T10:00:00.1234567890Z", "more than 9 fractional second digits"),
        ("0001-01-01T00:00:00+01:00", "outside years 0001-9999"),
        ("9999-12-31T23:59:59-01:00", "outside years 0001-9999"),
    ],
)
def test_an_invalid_instant_is_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(Iso8601Error) as caught:
        parse_instant(text)
    assert message in str(caught.value)
    if text:
        # The message quotes the offending text so a client can find it in its request.
        assert repr(text) in str(caught.value)


def test_a_missing_timezone_message_is_exact() -> None:
    with pytest.raises(Iso8601Error) as caught:
        parse_instant("2025-01-01T10:00:00")
    assert str(caught.value) == "instant '2025-01-01T10:00:00' has no timezone; add Z or an offset"


def test_iso8601_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="no timezone"):
        parse_instant("2025-01-01T10:00:00")


def test_a_very_long_instant_is_clipped_in_the_message() -> None:
    with pytest.raises(Iso8601Error) as caught:
        parse_instant("9" * 10_000)
    assert len(str(caught.value)) < 300


# ---------------------------------------------------------------------------
# Instants: formatting
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (datetime(2025, 1, 1, 10, 0, tzinfo=UTC), "2025-01-01T10:00:00Z"),
        (datetime(2025, 1, 1, 10, 0, 0, 500_000, tzinfo=UTC), "2025-01-01T10:00:00.500Z"),
        (datetime(2025, 1, 1, 10, 0, 0, 1_000, tzinfo=UTC), "2025-01-01T10:00:00.001Z"),
        (datetime(2025, 1, 1, 10, 0, 0, 123_456, tzinfo=UTC), "2025-01-01T10:00:00.123456Z"),
        (datetime(2025, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2))), "2025-01-01T10:00:00Z"),
        (datetime(1, 1, 1, tzinfo=UTC), "0001-01-01T00:00:00Z"),
        (datetime(999, 6, 7, 8, 9, 10, tzinfo=UTC), "0999-06-07T08:09:10Z"),
    ],
)
def test_an_instant_is_formatted_in_utc(value: datetime, expected: str) -> None:
    assert format_instant(value) == expected


def test_a_naive_datetime_cannot_be_formatted() -> None:
    with pytest.raises(Iso8601Error, match="naive datetime"):
        format_instant(datetime(2025, 1, 1, 10, 0))


def test_a_datetime_outside_the_utc_range_cannot_be_formatted() -> None:
    with pytest.raises(Iso8601Error, match="outside years 0001-9999"):
        format_instant(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))))


@pytest.mark.parametrize(
    "text",
    ["2025-01-01T10:00:00Z", "2025-06-30T23:59:59.250Z", "2025-06-30T23:59:59.000001Z"],
)
def test_a_canonical_instant_round_trips(text: str) -> None:
    assert format_instant(parse_instant(text)) == text


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-11))]
        ),
    )
)
def test_format_then_parse_instant_returns_the_same_instant(value: datetime) -> None:
    parsed = parse_instant(format_instant(value))
    assert parsed == value
    assert parsed.tzinfo is UTC


# ---------------------------------------------------------------------------
# Durations: accepted forms
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PT0S", timedelta(0)),
        ("P0D", timedelta(0)),
        ("PT10M", timedelta(minutes=10)),
        ("PT2M10S", timedelta(minutes=2, seconds=10)),
        ("PT1H", timedelta(hours=1)),
        ("P1D", timedelta(hours=24)),
        ("P1DT2H", timedelta(days=1, hours=2)),
        ("P1DT2H3M4S", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("PT0.5S", timedelta(milliseconds=500)),
        ("PT0,5S", timedelta(milliseconds=500)),
        ("PT1.5H", timedelta(minutes=90)),
        ("PT0.1M", timedelta(seconds=6)),
        ("P0.5D", timedelta(hours=12)),
        ("PT90M", timedelta(minutes=90)),
        ("PT3600S", timedelta(hours=1)),
        ("P2W", timedelta(days=14)),
        ("P1.5W", timedelta(days=10, hours=12)),
        ("PT0.0000001S", timedelta(0)),
        ("P366D", timedelta(days=366)),
        ("P52W", timedelta(days=364)),
    ],
)
def test_a_duration_in_a_supported_form_is_parsed(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


# ---------------------------------------------------------------------------
# Durations: rejections
# ---------------------------------------------------------------------------


def test_an_empty_duration_designator_has_no_components() -> None:
    with pytest.raises(Iso8601Error) as caught:
        parse_duration("PT")
    assert str(caught.value) == "'PT' has no duration components"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("P", "has no duration components"),
        ("PT", "has no duration components"),
        ("P1DT", "has 'T' but no hours, minutes or seconds after it"),
        ("P1Y", "uses years, whose length varies; use days instead"),
        ("P1M", "uses months, whose length varies; use days instead"),
        ("P1Y2M3D", "uses years"),
        ("-PT1M", "durations must not be negative"),
        ("−PT1M", "durations must not be negative"),
        ("pt1m", "uppercase designators"),
        ("pt1x", "is not an ISO 8601 duration"),
        ("PT1.5M30S", "has a fraction in minutes; only the smallest component may have one"),
        ("P1.5DT2H", "has a fraction in days"),
        ("P367D", "longer than the 366 day limit"),
        ("PT8785H", "longer than the 366 day limit"),
        ("P53W", "longer than the 366 day limit"),
        ("P" + "9" * 5000 + "D", "longer than the 366 day limit"),
        ("PT0.1234567890S", "more than 9 fractional digits"),
        ("P1W2D", "combines weeks with other components"),
        ("1D", "is not an ISO 8601 duration"),
        ("PT1S1M", "is not an ISO 8601 duration"),
        ("PT.5S", "is not an ISO 8601 duration"),
        ("PT1.S", "is not an ISO 8601 duration"),
        ("P1H", "is not an ISO 8601 duration"),
        ("+PT1M", "is not an ISO 8601 duration"),
        ("PT١S", "is not an ISO 8601 duration"),
        ("", "duration is empty"),
        ("PT1M ", "leading or trailing whitespace"),
    ],
)
def test_an_invalid_duration_is_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(Iso8601Error) as caught:
        parse_duration(text)
    assert message in str(caught.value)


def test_a_duration_with_years_is_refused() -> None:
    with pytest.raises(Iso8601Error, match="use days"):
        parse_duration("P1Y")


def test_a_negative_duration_is_refused() -> None:
    with pytest.raises(Iso8601Error, match="durations must not be negative"):
        parse_duration("-PT1M")


# ---------------------------------------------------------------------------
# Durations: formatting
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (timedelta(0), "PT0S"),
        (timedelta(minutes=10), "PT10M"),
        (timedelta(minutes=2, seconds=10), "PT2M10S"),
        (timedelta(days=1, hours=2), "P1DT2H"),
        (timedelta(days=1), "P1D"),
        (timedelta(milliseconds=500), "PT0.5S"),
        (timedelta(microseconds=1), "PT0.000001S"),
        (timedelta(days=14), "P14D"),
        (timedelta(hours=1, seconds=1, milliseconds=250), "PT1H1.25S"),
        (timedelta(days=366), "P366D"),
    ],
)
def test_a_duration_is_formatted_canonically(value: timedelta, expected: str) -> None:
    assert format_duration(value) == expected


def test_a_negative_duration_cannot_be_formatted() -> None:
    with pytest.raises(ValueError, match="durations must not be negative"):
        format_duration(timedelta(seconds=-1))


def test_a_duration_over_the_limit_cannot_be_formatted() -> None:
    with pytest.raises(Iso8601Error, match="366 day limit"):
        format_duration(timedelta(days=366, microseconds=1))


@pytest.mark.parametrize("text", ["PT0S", "PT10M", "PT2M10S", "P1DT2H", "PT0.5S", "P3DT4H5M6.7S"])
def test_a_canonical_duration_round_trips(text: str) -> None:
    assert format_duration(parse_duration(text)) == text


@given(st.integers(min_value=0, max_value=366 * 86_400_000))
def test_format_then_parse_duration_returns_the_same_timedelta(milliseconds: int) -> None:
    value = timedelta(milliseconds=milliseconds)
    assert parse_duration(format_duration(value)) == value


# ---------------------------------------------------------------------------
# Intervals
# ---------------------------------------------------------------------------

START = datetime(2025, 1, 1, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("2025-01-01T10:00:00Z/2025-01-01T12:00:00Z", START, START + timedelta(hours=2)),
        ("2025-01-01T10:00:00Z/PT2H", START, START + timedelta(hours=2)),
        ("PT2H/2025-01-01T12:00:00Z", START, START + timedelta(hours=2)),
        ("2025-01-01T10:00:00Z/PT0S", START, START),
        ("2025-01-01T11:00:00+01:00/2025-01-01T10:30:00Z", START, START + timedelta(minutes=30)),
        (
            "2025-01-01/2025-01-02",
            datetime(2025, 1, 1, tzinfo=UTC),
            datetime(2025, 1, 2, tzinfo=UTC),
        ),
        ("2025-01-01/P1D", datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 2, tzinfo=UTC)),
        ("2025-01-01/2025-01-01T10:00Z", datetime(2025, 1, 1, tzinfo=UTC), START),
    ],
)
def test_an_interval_in_a_supported_form_is_parsed(
    text: str, start: datetime, end: datetime
) -> None:
    interval = parse_interval(text)
    assert interval == Interval(start, end)
    assert interval.start.tzinfo is UTC
    assert interval.end.tzinfo is UTC


def test_an_interval_reports_its_duration() -> None:
    assert parse_interval("2025-01-01T10:00:00Z/PT90M").duration == timedelta(minutes=90)


def test_the_now_argument_does_not_change_the_result() -> None:
    text = "2025-01-01T10:00:00Z/PT1H"
    assert parse_interval(text, now=START) == parse_interval(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2025-01-01T10:00:00Z", "an interval needs two parts separated by '/'"),
        ("", "interval is empty"),
        (" 2025-01-01T10:00:00Z/PT1H", "leading or trailing whitespace"),
        ("2025-01-01T10:00:00Z/PT1H/PT1H", "has more than one '/'"),
        ("/PT1H", "has nothing before '/'"),
        ("2025-01-01T10:00:00Z/", "has nothing after '/'"),
        ("PT1H/PT2H", "has two durations"),
        ("2025-01-01T12:00:00Z/2025-01-01T10:00:00Z", "ends before it starts"),
        ("2025-01-01T10:00:00/PT1H", "interval start '2025-01-01T10:00:00' has no timezone"),
        ("2025-01-01T10:00:00Z/2025-02-30", "interval end '2025-02-30' has day 30"),
        ("2025-01-01T10:00:00Z/P1M", "interval duration 'P1M' uses months"),
        ("2025-01-01T10:00:00Z/-PT1H", "durations must not be negative"),
        ("2025-01-01T10:00:00Z/ PT1H", "leading or trailing whitespace"),
        ("2025-01-01T10:00:00Z/12:00", "is not an ISO 8601 instant"),
        ("9999-12-31T12:00:00Z/P1D", "reaches outside years 0001-9999"),
        ("P1D/0001-01-01T12:00:00Z", "reaches outside years 0001-9999"),
    ],
)
def test_an_invalid_interval_is_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(Iso8601Error) as caught:
        parse_interval(text)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "text",
    [
        "2025-01-01T10:00:00Z/2025-01-01T12:00:00Z",
        "2025-01-01T10:00:00Z/2025-01-01T10:00:00Z",
        "2025-01-01T10:00:00.250Z/2026-01-01T00:00:00Z",
    ],
)
def test_a_canonical_interval_round_trips(text: str) -> None:
    assert format_interval(parse_interval(text)) == text


def test_an_interval_with_a_duration_is_formatted_with_both_end_points() -> None:
    assert format_interval(parse_interval("2025-01-01/PT1H")) == (
        "2025-01-01T00:00:00Z/2025-01-01T01:00:00Z"
    )


def test_an_interval_normalises_aware_end_points_to_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    interval = Interval(datetime(2025, 1, 1, 12, tzinfo=plus_two), START)
    assert interval.start.tzinfo is UTC
    assert interval.start == START
    assert interval.duration == timedelta(0)


def test_an_interval_refuses_naive_end_points() -> None:
    with pytest.raises(Iso8601Error, match="naive datetime"):
        Interval(datetime(2025, 1, 1), START)


def test_an_interval_refuses_an_end_before_its_start() -> None:
    with pytest.raises(Iso8601Error, match="is before its start"):
        Interval(START, START - timedelta(seconds=1))


# ---------------------------------------------------------------------------
# Robustness: whatever the input, failures are Iso8601Error and nothing else
# ---------------------------------------------------------------------------

# Characters that appear in the grammars, so generated text gets past the first checks.
_ISO_ALPHABET = st.sampled_from([*"0123456789-+:.,/TtZzPWYMDHS ", "9999", "0001", "-00"])
_ISO_LIKE_TEXT = st.one_of(st.text(max_size=40), st.lists(_ISO_ALPHABET, max_size=30).map("".join))


@given(_ISO_LIKE_TEXT)
def test_any_text_either_parses_or_raises_iso8601_error(text: str) -> None:
    # Any other exception type (IndexError, OverflowError, ...) escapes and fails the test.
    for parse in (parse_instant, parse_duration, parse_interval):
        with contextlib.suppress(Iso8601Error):
            parse(text)
