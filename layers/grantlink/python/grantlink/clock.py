"""The one clock. Tests freeze it by patching `grantlink.clock.now`; code always calls `clock.now()`."""

from __future__ import annotations

import re
from datetime import UTC, datetime

ISO = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


def now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z and whole seconds, e.g. 2026-11-22T10:00:00Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    """The inverse of `iso()`; anything else is a ValueError. (A pattern check and `fromisoformat`: strptime
    takes ten times as long, and every item read parses two or three of these.)"""
    if not ISO.fullmatch(text):
        raise ValueError(f"not an ISO 8601 UTC time with whole seconds: {text!r}")
    return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)
