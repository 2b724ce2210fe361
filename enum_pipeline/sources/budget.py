"""What a scope's read cost against a host's rate limit, and the limit's headers.

``RequestBudget`` counts one read's requests, retries and seconds waited, and keeps the quota
the host last reported (``x-ratelimit-remaining`` / ``ratelimit-remaining``). With a
``reserve`` set, the read stops *before* the request that would leave fewer than ``reserve``
requests of the token's quota (to other tools sharing the token): its scope ends incomplete,
saying so, and the next run reads it again. Pure bookkeeping, no I/O.
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

# Epoch-based resets get a small margin for clock skew between us and the server.
RESET_MARGIN_SECONDS = 1.0


@dataclass
class RequestBudget:
    """The cost of one read (a scope's listing, or a cleanup's look-ups)."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0  # answers that were a rate limit
    limit_wait_seconds: float = 0.0  # waited for a rate limit to reset
    backoff_seconds: float = 0.0  # waited before retrying a transient failure
    conditional_hits: int = 0  # 304 answers (no conditional requests are made yet)
    quota_limit: int | None = None
    quota_remaining: int | None = None  # as the last answer reported it
    reserve: int = 0  # requests of the quota left to other tools

    def observe(self, headers: Mapping[str, str]) -> None:
        """Count one answer and keep the quota it reports."""
        self.requests += 1
        remaining = _int(headers.get("x-ratelimit-remaining", headers.get("ratelimit-remaining")))
        if remaining is not None:
            self.quota_remaining = remaining
        limit = _int(headers.get("x-ratelimit-limit", headers.get("ratelimit-limit")))
        if limit is not None:
            self.quota_limit = limit

    def waited(self, seconds: float, *, rate_limit: bool) -> None:
        """Count one retry and the wait before it."""
        self.retries += 1
        if rate_limit:
            self.rate_limited += 1
            self.limit_wait_seconds += seconds
        else:
            self.backoff_seconds += seconds

    def refusal(self) -> str | None:
        """Why the next request must not be sent (the reserve reached), or None."""
        if self.reserve <= 0 or self.quota_remaining is None:
            return None
        if self.quota_remaining > self.reserve:
            return None
        return (
            f"stopped before exhausting the token's rate limit: {self.quota_remaining} requests "
            f"left of {self.quota_limit or '?'}, and reserve_requests keeps {self.reserve} for "
            "other tools; the next run reads this scope again"
        )

    def as_dict(self) -> dict[str, int | float | None]:
        """Plain data, seconds rounded (a verdict's ``budget``)."""
        data = asdict(self)
        for key in ("limit_wait_seconds", "backoff_seconds"):
            data[key] = round(data[key], 3)
        return data


def _int(value: str | None) -> int | None:
    try:
        return int(str(value).strip()) if value is not None else None
    except ValueError:
        return None


def parse_retry_after(value: str | None, clock: Callable[[], float]) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date), or None."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - clock())


def parse_reset(value: str | None, clock: Callable[[], float]) -> float | None:
    """A rate-limit reset as seconds to wait: epoch seconds (GitHub, GitLab) or delta seconds."""
    if value is None or not value.strip():
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    if number > 1_000_000_000:  # epoch seconds
        return max(0.0, number - clock()) + RESET_MARGIN_SECONDS
    return max(0.0, number)
