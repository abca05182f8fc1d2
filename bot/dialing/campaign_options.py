"""How a campaign run is dialled (its options) and when a lead may be called (its window).

The options are stored on the run (`campaign_runs.options`), so every job worker on every
machine dials the run the same way; a bad value is refused, in one line, before anything is
stored or dialled.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

RETRY_STATUSES = frozenset({"busy", "no-answer", "failed"})
MAX_CONCURRENCY = 1000  # calls live at once in one run
MAX_CALLS_PER_MINUTE = 200  # Exotel's own limit per account
MAX_ATTEMPTS = 10
MAX_RETRY_DELAY_SECS = 7 * 24 * 3600.0


def parse_window(text: str) -> tuple[time, time]:
    """`10:00-19:00` -> (10:00, 19:00); a one-line ValueError otherwise."""
    try:
        start, end = (time.fromisoformat(part.strip()) for part in text.split("-"))
    except ValueError:
        raise ValueError(f"the window must look like 10:00-19:00 (got {text[:40]!r})") from None
    return start, end


@dataclass
class CampaignOptions:
    """How hard and when a run is dialled: stored on the run, read by every job worker."""

    concurrency: int = 5
    calls_per_minute: int = 60
    window_start: time = time(10, 0)
    window_end: time = time(19, 0)
    timezone: str = "Asia/Kolkata"
    max_attempts: int = 3
    retry_delay_secs: float = 1800.0
    retry_statuses: frozenset[str] = RETRY_STATUSES
    do_not_call: frozenset[str] = frozenset()  # used while reading the file, not stored

    def __post_init__(self) -> None:
        """Refuse, before any dial, values that would stall the run (no slot, no rate, no
        attempt) or quietly dial in another time zone; the message is one line."""
        for name in ("concurrency", "calls_per_minute", "max_attempts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be at least 1 (got {getattr(self, name)})")
        if not 0 <= self.retry_delay_secs <= MAX_RETRY_DELAY_SECS:  # also refuses NaN and infinity
            raise ValueError(f"retry-delay must be between 0 and {MAX_RETRY_DELAY_SECS:.0f} seconds "
                             f"(got {self.retry_delay_secs:g})")
        if self.window_start.tzinfo is not None or self.window_end.tzinfo is not None:
            raise ValueError("the calling window is local time in each lead's time zone: give it without "
                             "an offset (e.g. 10:00-19:00)")
        if self.window_start >= self.window_end:
            raise ValueError(f"the calling window must start before it ends (got {self.window_start:%H:%M}-"
                             f"{self.window_end:%H:%M})")
        unknown = set(self.retry_statuses) - RETRY_STATUSES
        if unknown:
            raise ValueError(f"retry statuses must be among {', '.join(sorted(RETRY_STATUSES))} (got {sorted(unknown)})")
        if self.concurrency > MAX_CONCURRENCY or self.calls_per_minute > MAX_CALLS_PER_MINUTE:
            raise ValueError(f"concurrency is at most {MAX_CONCURRENCY} and calls-per-minute at most "
                             f"{MAX_CALLS_PER_MINUTE} (got {self.concurrency}, {self.calls_per_minute})")
        if self.max_attempts > MAX_ATTEMPTS:
            raise ValueError(f"max-attempts is at most {MAX_ATTEMPTS} (got {self.max_attempts})")
        if not known_timezone(self.timezone):
            raise ValueError(f"unknown time zone {self.timezone!r} (give an IANA name such as Asia/Kolkata)")


    def to_json(self) -> dict[str, Any]:
        """What the run row keeps (`campaign_runs.options`)."""
        return {"concurrency": self.concurrency, "calls_per_minute": self.calls_per_minute,
                "window_start": self.window_start.isoformat(), "window_end": self.window_end.isoformat(),
                "timezone": self.timezone, "max_attempts": self.max_attempts,
                "retry_delay_secs": self.retry_delay_secs, "retry_statuses": sorted(self.retry_statuses)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CampaignOptions:
        """The options a run was started with (unknown keys ignored, missing ones defaulted)."""
        values: dict[str, Any] = {}
        for key in ("concurrency", "calls_per_minute", "max_attempts"):
            if key in data:
                values[key] = int(data[key])
        for key in ("window_start", "window_end"):
            if key in data:
                values[key] = time.fromisoformat(str(data[key]))
        if "timezone" in data:
            values["timezone"] = str(data["timezone"])
        if "retry_delay_secs" in data:
            values["retry_delay_secs"] = float(data["retry_delay_secs"])
        if "retry_statuses" in data:
            values["retry_statuses"] = frozenset(str(s) for s in data["retry_statuses"])
        return cls(**values)


def known_timezone(name: str) -> bool:
    """An IANA zone this machine knows (`Mars/Olympus`, '' and paths are not)."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def next_window_start(now: datetime, lead_tz: str, options: CampaignOptions) -> datetime | None:
    """None if `now` is inside the lead's calling window, else when the window next opens (UTC)."""
    try:
        zone = ZoneInfo(lead_tz)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo(options.timezone)
    local = now.astimezone(zone)
    if options.window_start <= local.time() < options.window_end:
        return None
    day = local.date() if local.time() < options.window_start else local.date() + timedelta(days=1)
    return datetime.combine(day, options.window_start, tzinfo=zone).astimezone(UTC)
