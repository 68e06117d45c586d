"""The one time format: `iso()` writes it, `parse_iso()` reads exactly it back and refuses anything else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from grantlink import clock


def test_iso_round_trips_in_utc_with_whole_seconds() -> None:
    moment = datetime(2026, 11, 22, 10, 0, 5, 999_999, tzinfo=timezone(timedelta(hours=3)))
    text = clock.iso(moment)
    assert text == "2026-11-22T07:00:05Z"
    assert clock.parse_iso(text) == moment.replace(microsecond=0)
    assert clock.parse_iso(text).tzinfo == UTC


@pytest.mark.parametrize(
    "text",
    ["2026-11-22T10:00:00", "2026-11-22 10:00:00Z", "2026-13-22T10:00:00Z", "2026-11-22T10:00:00.5Z",
     "2026-11-22T10:00:00+00:00", "20261122T100000Z", "", "2026-11-22T10:00:00Z\n"],
)  # fmt: skip
def test_anything_else_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        clock.parse_iso(text)
