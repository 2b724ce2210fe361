"""Shared HTTP machinery for the code-host sources (GitHub, GitLab, Gitea).

One page is one ``GET`` that must end in parsed JSON or a :class:`PageError`. Transient failures
(5xx, timeouts, connection errors, invalid or truncated JSON) are retried with exponential backoff
and jitter; rate limits (``Retry-After``, ``x-ratelimit-remaining: 0`` + ``x-ratelimit-reset``,
GitLab ``RateLimit-Reset``, GitHub secondary limits, also a 403 "abuse detection" answer without
``Retry-After``) are waited out. Every page has a budget of ``max_retries`` retries and
``max_wait_seconds`` of total waiting; past either, the page fails.

Every request has a wall-clock deadline (``request_deadline``, default 60 s), not only httpx's
per-read timeout (which restarts on every byte a trickling server sends): each socket operation's
timeout is clamped to what remains of the deadline (on the client this class builds; see
``httpdeadline``), and the body is streamed with the clock checked between chunks and its size
bounded (``max_body_bytes``, 64 MiB). A request past its deadline is a transient failure, so a
page ends within ``(max_retries + 1) * request_deadline + max_wait_seconds`` (11 min).

Credentials travel only in request headers. Nothing here logs a header, and every URL that reaches
a log line or an error message goes through :func:`safe_url` (``redact_url`` plus scrubbing of
the known secret values).
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from enum_pipeline.sources.httpdeadline import DeadlinePassed, _Deadline, _deadline_transport
from enum_pipeline.sources.remotes import redact_url

log = logging.getLogger(__name__)

USER_AGENT = "enum-pipeline/0.1 (+https://github.com/dagster-io)"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
TRANSIENT_STATUSES = frozenset({408, 500, 502, 503, 504, 520, 521, 522, 523, 524})
# GitHub asks clients hit by a secondary rate limit without a Retry-After to wait a minute.
SECONDARY_LIMIT_DEFAULT_WAIT = 60.0
# Epoch-based resets get a small margin for clock skew between us and the server.
RESET_MARGIN_SECONDS = 1.0
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
#: A request's wall-clock bound (connect, headers and body), whatever the server trickles.
DEFAULT_REQUEST_DEADLINE = 60.0
#: The largest response body read (a listing page of 100 repositories is about 0.5 MiB).
DEFAULT_MAX_BODY_BYTES = 64 << 20

# GitHub's secondary limits: "You have exceeded a secondary rate limit", and the older "You have
# triggered an abuse detection mechanism" (a 403, sometimes without Retry-After).
_RATE_LIMIT_BODY = re.compile(r"rate limit|abuse detection|abuse-rate-limits", re.IGNORECASE)


class PageError(Exception):
    """A page that could not be read: ``url`` is already redacted, ``reason`` says why."""

    def __init__(self, url: str, reason: str, status: int | None = None) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class Page:
    """A JSON page that was read: ``url`` is the URL requested (not redacted, keep internal)."""

    url: str
    headers: httpx.Headers
    data: Any


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# How tokens of the supported hosts begin (GitHub classic and fine-grained, GitLab).
_TOKEN_PREFIXES = ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "glpat", "gldt", "glrt")


def is_env_name(name: str) -> bool:
    """True when ``name`` can be an environment variable's name and does not look like a token.

    A ``token_env`` that fails this is most likely the token itself, pasted in the wrong key:
    callers reject it without ever showing it. Besides the syntax (letters, digits, ``_``), a
    known token prefix (``ghp_``, ``github_pat_``, ``glpat``...) or a long run mixing lower-case
    letters and digits (Gitea's tokens are 40 hex digits) is refused.
    """
    if not isinstance(name, str) or len(name) > 255 or _ENV_NAME.fullmatch(name) is None:
        return False
    if name.lower().startswith(_TOKEN_PREFIXES):
        return False
    mixed = any(c.islower() for c in name) and any(c.isdigit() for c in name)
    return not (len(name) >= 30 and mixed)


def read_token(env_name: str | None) -> str | None:
    """The token held in environment variable ``env_name``; None when unset, empty or unnamed."""
    if not env_name:
        return None
    value = os.environ.get(env_name, "").strip()
    return value or None


def web_host(base_url: str) -> str:
    """The lower-cased ``host[:port]`` of a URL, without user info."""
    parts = urlsplit(base_url)
    host = (parts.hostname or "").lower()
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return host


def same_origin(url: str, base_url: str) -> bool:
    """True when ``url`` has the scheme, host and port of ``base_url``."""
    a, b = urlsplit(url), urlsplit(base_url)

    def origin(p: Any) -> tuple[str, str, int | None]:
        default = {"http": 80, "https": 443}.get(p.scheme.lower())
        return (p.scheme.lower(), (p.hostname or "").lower(), p.port or default)

    return origin(a) == origin(b)


_LINK_PART = re.compile(r"<([^>]*)>((?:\s*;\s*[^;,]+(?:=(?:\"[^\"]*\"|[^;,]*))?)*)")
_REL = re.compile(r";\s*rel\s*=\s*(?:\"([^\"]*)\"|([^;,\s]+))", re.IGNORECASE)


def parse_link_header(value: str | None, base: str | None = None) -> dict[str, str]:
    """Parse an RFC 8288 ``Link`` header into ``{rel: absolute url}``."""
    links: dict[str, str] = {}
    if not value:
        return links
    for match in _LINK_PART.finditer(value):
        target, params = match.group(1).strip(), match.group(2)
        if base:
            target = urljoin(base, target)
        for rel_match in _REL.finditer(params):
            rels = rel_match.group(1) if rel_match.group(1) is not None else rel_match.group(2)
            for rel in rels.split():
                links.setdefault(rel.lower(), target)
    return links


def parse_int_header(headers: Mapping[str, str], *names: str) -> int | None:
    """The first of ``names`` present in ``headers`` as an int, or None."""
    for name in names:
        raw = headers.get(name)
        if raw is None or not str(raw).strip():
            continue
        try:
            return int(str(raw).strip())
        except ValueError:
            continue
    return None


class HttpClient:
    """A JSON GET client with bounded retries and rate-limit waits.

    ``client`` may be injected (it is then never closed here); otherwise one is created on first
    use and closed by :meth:`close`. No conditional requests (``If-None-Match``): a 304 would need
    the page bodies kept across runs, and sources are built anew every run.
    """

    def __init__(
        self,
        *,
        client: httpx.Client | None = None,
        max_retries: int = 5,
        max_wait_seconds: float = 300.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        rng: random.Random | None = None,
        logger: logging.Logger | None = None,
        request_deadline: float = DEFAULT_REQUEST_DEADLINE,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self._client = client
        self._owns_client = client is None
        self.max_retries = max(0, int(max_retries))
        self.max_wait_seconds = float(max_wait_seconds)
        self._sleep = sleep
        self._clock = clock
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._timeout = timeout
        self._rng = rng or random.Random()
        self._log = logger or log
        self._secrets: tuple[str, ...] = ()
        self.request_deadline = float(request_deadline)
        self.max_body_bytes = int(max_body_bytes)
        self._deadline = _Deadline()

    # -- lifecycle ---------------------------------------------------------------------------

    def set_secrets(self, secrets: Iterable[str | None]) -> None:
        """Values never to appear in a log line or error message (tokens)."""
        self._secrets = tuple(s for s in secrets if s)

    def add_secret(self, secret: str) -> None:
        """One more value never to appear in a log line or error message."""
        self._secrets = (*self._secrets, secret)

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(
                timeout=self._timeout,
                follow_redirects=False,
                headers={"User-Agent": USER_AGENT},
                transport=_deadline_transport(self._deadline),
            )
            self._owns_client = True
        return self._client

    def close(self) -> None:
        """Close the underlying client if this object created it."""
        if self._owns_client and self._client is not None:
            self._client.close()
            self._client = None

    # -- helpers -----------------------------------------------------------------------------

    def scrub(self, text: str) -> str:
        """Remove every known secret value from ``text``."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def safe_url(self, url: str | httpx.URL) -> str:
        """A URL fit for logs and error messages: credentials redacted, secrets scrubbed."""
        return self.scrub(redact_url(str(url)))

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with "equal jitter": half fixed, half random."""
        ceiling = min(self.backoff_max, self.backoff_base * (2**attempt))
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def _rate_limit_wait(self, response: httpx.Response, body: str = "") -> float | None:
        """Seconds the server asks us to wait, or None if this is not a rate-limit answer.

        A 403 is a rate limit when it says so: ``Retry-After``, ``x-ratelimit-remaining: 0``, or
        a body naming a (secondary) rate limit or abuse detection, whatever the remaining count.
        """
        status = response.status_code
        headers = response.headers
        remaining = headers.get("x-ratelimit-remaining", headers.get("ratelimit-remaining"))
        exhausted = remaining is not None and remaining.strip() == "0"
        retry_after = _parse_retry_after(headers.get("retry-after"), self._clock)
        if status == 403:
            if not (retry_after is not None or exhausted or _RATE_LIMIT_BODY.search(body)):
                return None
        elif status != 429:
            return None
        if retry_after is not None:
            return retry_after
        reset = _parse_reset(
            headers.get("x-ratelimit-reset") or headers.get("ratelimit-reset"), self._clock
        )
        if reset is not None and (exhausted or status == 429):
            return reset
        if status == 403:
            return SECONDARY_LIMIT_DEFAULT_WAIT
        return -1.0  # a 429 without hints: use the backoff

    def _send(
        self, url: str, headers: Mapping[str, str], method: str = "GET", body: bytes | None = None
    ) -> tuple[httpx.Response, bytes]:
        """The request and the answer's body, following a GET's redirects only within the
        origin (credentials never leave it), all within one ``request_deadline``:
        ``DeadlinePassed`` past it."""
        at = self._deadline.at = time.monotonic() + self.request_deadline
        try:
            return self._send_within(url, headers, method, body)
        except httpx.TimeoutException as exc:
            if time.monotonic() >= at - 0.01:  # the deadline cut it, not a per-read timeout
                raise DeadlinePassed(str(exc)) from exc
            raise
        finally:
            self._deadline.at = None

    def _get(
        self, url: str, headers: Mapping[str, str], method: str = "GET", body: bytes | None = None
    ) -> tuple[httpx.Response, bytes]:
        """One request, the answer's body streamed with the clock checked between chunks and
        its size bounded."""
        client = self._http()
        request = client.build_request(method, url, headers=headers, content=body)
        response = client.send(request, stream=True, follow_redirects=False)
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > self.max_body_bytes:
                    raise PageError(
                        self.safe_url(url),
                        f"response body larger than max_body_bytes={self.max_body_bytes}",
                        response.status_code,
                    )
                chunks.append(chunk)
                self._deadline.clamp(None, DeadlinePassed)
        finally:
            response.close()
        return response, b"".join(chunks)

    def _send_within(
        self, url: str, headers: Mapping[str, str], method: str, content: bytes | None
    ) -> tuple[httpx.Response, bytes]:
        for _ in range(MAX_REDIRECTS + 1):
            response, body = self._get(url, headers, method, content)
            location = response.headers.get("location")
            if response.status_code not in REDIRECT_STATUSES or not location or method != "GET":
                return response, body
            target = urljoin(url, location)
            if not same_origin(target, url):
                raise PageError(
                    self.safe_url(url),
                    f"HTTP {response.status_code} redirect to another origin "
                    f"({self.safe_url(target)}); not followed with credentials",
                    response.status_code,
                )
            url = target
        raise PageError(self.safe_url(url), f"more than {MAX_REDIRECTS} redirects")

    # -- the one public verb -----------------------------------------------------------------

    def get_json(
        self,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        expect: type | None = None,
    ) -> Page:
        """GET ``url``'s parsed JSON, retrying as configured, or PageError; ``expect`` (e.g.
        ``list``) makes a body of another JSON type count as invalid."""
        return self.request_json("GET", url, params=params, headers=headers, expect=expect)

    def request_json(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        expect: type | None = None,
        json_body: Any = None,
    ) -> Page:
        """``get_json`` for any method (``json_body`` sent as JSON), with the same retries."""
        body = None if json_body is None else json.dumps(json_body).encode()
        full_url = str(httpx.URL(url, params=params) if params else httpx.URL(url))
        shown = self.safe_url(full_url)
        request_headers = dict(headers or {})
        if body is not None:
            request_headers.setdefault("Content-Type", "application/json")
        waited = 0.0
        attempt = 0
        while True:
            outcome = self._attempt(full_url, request_headers, expect, shown, method, body)
            if isinstance(outcome, Page):
                return outcome
            # A transient failure: retry if the budget allows.
            error, wait = outcome
            if attempt >= self.max_retries:
                raise PageError(shown, f"{error}; gave up after {attempt + 1} attempts")
            delay = max(self._backoff(attempt), wait or 0.0)
            budget = self.max_wait_seconds - waited
            if delay > budget:
                raise PageError(
                    shown,
                    f"{error}; the next wait ({delay:.0f}s) exceeds the remaining wait budget "
                    f"({max(budget, 0):.0f}s of max_wait_seconds={self.max_wait_seconds:g})",
                )
            self._log.warning(
                "%s %s: %s; retry %d/%d in %.1fs",
                method,
                shown,
                error,
                attempt + 1,
                self.max_retries,
                delay,
            )
            self._sleep(delay)
            waited += delay
            attempt += 1

    def _attempt(
        self,
        full_url: str,
        request_headers: dict[str, str],
        expect: type | None,
        shown: str,
        method: str = "GET",
        body: bytes | None = None,
    ) -> Page | tuple[str, float | None]:
        """One request: the page, or ``(transient error, seconds asked to wait)``; PageError when
        the answer is final (a 4xx that is not a rate limit)."""
        try:
            response, content = self._send(full_url, request_headers, method, body)
        except DeadlinePassed:
            return f"no answer within the request deadline ({self.request_deadline:g}s)", None
        except httpx.TimeoutException as exc:
            return f"timeout ({type(exc).__name__})", None
        except httpx.TransportError as exc:
            return f"connection error ({type(exc).__name__}: {self.scrub(str(exc))[:200]})", None
        status = response.status_code
        if 200 <= status < 300:
            data = _decode(content, expect)
            if data is not _INVALID:
                return Page(full_url, response.headers, data)
            kind = "JSON" if expect is None else f"JSON {expect.__name__}"
            return f"HTTP {status} with invalid or truncated {kind} body", None
        return self._failure(response, _text(response, content), shown)

    def _failure(self, response: httpx.Response, body: str, shown: str) -> tuple[str, float | None]:
        """A rate limit or a transient status to retry; PageError for any other status."""
        status = response.status_code
        limit_wait = self._rate_limit_wait(response, body)
        if limit_wait is not None:
            return f"rate limited (HTTP {status})", None if limit_wait < 0 else limit_wait
        if status in TRANSIENT_STATUSES:
            wait = _parse_retry_after(response.headers.get("retry-after"), self._clock)
            return f"HTTP {status} {response.reason_phrase}".rstrip(), wait
        message = self.scrub(_error_message(body))
        reason = f"HTTP {status} {response.reason_phrase}".rstrip()
        if message:
            reason += f": {message}"
        raise PageError(shown, reason, status)


_INVALID = object()


def _decode(body: bytes, expect: type | None) -> Any:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return _INVALID
    if expect is not None and not isinstance(data, expect):
        return _INVALID
    return data


def _text(response: httpx.Response, body: bytes) -> str:
    """The start of an (error) body as text, for the hints it holds."""
    try:
        return body[:16000].decode(response.encoding or "utf-8", "replace")[:4000]
    except LookupError:  # an unknown charset
        return body[:4000].decode("utf-8", "replace")


def _error_message(text: str) -> str:
    """A short human message out of an error body (``message`` / ``error`` keys)."""
    try:
        data = json.loads(text)
    except ValueError:
        return " ".join(text.split())[:200]
    if isinstance(data, dict):
        for key in ("message", "error", "error_description"):
            if data.get(key):
                return " ".join(str(data[key]).split())[:200]
    return ""


def _parse_retry_after(value: str | None, clock: Callable[[], float]) -> float | None:
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


def _parse_reset(value: str | None, clock: Callable[[], float]) -> float | None:
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
