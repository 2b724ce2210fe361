"""The machinery every loopback code-host fake shares: a threaded ``http.server`` on
``127.0.0.1:0`` (:class:`FakeCodeHost`) handing each request to one *app* (a ``FakeApp``
subclass in ``fake_<host>.py``), per-page failure injection (:meth:`FakeApp.fail_page`,
:meth:`FakeApp.rate_limit_page`, :meth:`FakeApp.truncate_page`, :meth:`FakeApp.slow_page`,
:meth:`FakeApp.trickle_page`, :meth:`FakeApp.cut_after`), the record of every request
(:attr:`FakeApp.requests`), and the contract each host declares for the shared suite
(:class:`HostContract`).

``token=...`` makes an app refuse (401) requests with another credential (requests without one
are anonymous); without it, any credential is accepted. As on the real hosts, private (and
internal) repositories are listed and counted only for an authenticated request.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

BASE_TIME = datetime(2024, 1, 1, tzinfo=UTC)


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Reply:
    """One answer of an app: status, headers, body bytes, and the listing page it belongs to."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    page: int | None = None
    delay: float = 0.0
    trickle: float = 0.0  # > 0: send one byte every ``trickle`` seconds, never finishing
    trickle_headers: bool = False  # trickle from the status line on (else from the body)

    @classmethod
    def json(cls, status: int, data: Any, headers: dict[str, str] | None = None, page=None):
        """A JSON answer."""
        return cls(status, dict(headers or {}), json.dumps(data).encode(), page)


@dataclass
class Fault:
    """An injected failure for listing page ``page`` (None: any page), ``times`` times."""

    page: int | None
    times: int | None = 1  # None: forever
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    truncate: bool = False
    delay: float = 0.0
    trickle: float = 0.0
    trickle_headers: bool = False
    then: Callable[[], None] | None = None  # run after the page is built (change the data)
    hits: int = 0

    def active(self) -> bool:
        return self.times is None or self.hits < self.times


@dataclass
class RecordedRequest:
    """A request the fake received, and the status it answered."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    page: int | None = None
    status: int | None = None
    body: bytes = b""


class FakeApp:
    """Base of the fake APIs: routing is the subclass's, faults and recording are here."""

    def __init__(
        self,
        *,
        token: str | None = None,
        token_owner: str | None = "token-bot",
    ) -> None:
        self.token = token
        self.token_owner = token_owner  # None: the token cannot say whom it belongs to
        self.token_owner_id = 4242
        self.cut_after_page: int | None = None
        self.faults: list[Fault] = []
        self.requests: list[RecordedRequest] = []
        self.lock = threading.RLock()
        self._next_id = 1000

    # -- failure injection ---------------------------------------------------------------------

    def add_fault(self, fault: Fault) -> Fault:
        """Register a fault; the first active fault matching a page wins."""
        with self.lock:
            self.faults.append(fault)
        return fault

    def fail_page(self, page: int | None, status: int = 502, times: int | None = 1, **kw) -> Fault:
        """Answer ``status`` (default 502) on ``page``, ``times`` times (None: forever)."""
        body = kw.pop("body", json.dumps({"message": f"injected {status}"}).encode())
        return self.add_fault(Fault(page, times, status=status, body=body, **kw))

    def rate_limit_page(
        self,
        page: int | None,
        *,
        status: int = 429,
        retry_after: float | None = None,
        reset_in: float | None = None,
        reset_header: str = "x-ratelimit-reset",
        message: str = "API rate limit exceeded",
        times: int | None = 1,
    ) -> Fault:
        """A rate-limit answer: ``Retry-After`` and/or ``remaining: 0`` + reset epoch."""
        headers: dict[str, str] = {}
        if retry_after is not None:
            headers["Retry-After"] = str(int(retry_after))
        if reset_in is not None:
            headers["x-ratelimit-remaining"] = "0"
            headers["x-ratelimit-limit"] = "5000"
            headers[reset_header] = str(int(time.time() + reset_in))
        body = json.dumps({"message": message}).encode()
        return self.add_fault(Fault(page, times, status=status, headers=headers, body=body))

    def truncate_page(self, page: int | None, times: int | None = 1) -> Fault:
        """Serve ``page`` with its JSON body cut in half (a valid HTTP answer, invalid JSON)."""
        return self.add_fault(Fault(page, times, truncate=True))

    def slow_page(self, page: int | None, delay: float, times: int | None = 1) -> Fault:
        """Wait ``delay`` seconds before answering ``page``."""
        return self.add_fault(Fault(page, times, delay=delay))

    def trickle_page(
        self, page: int | None, interval: float = 0.2, *, headers: bool = False, times=None
    ) -> Fault:
        """Answer ``page`` one byte every ``interval`` seconds and never finish: the body after
        complete headers (a huge ``Content-Length``), or from the status line on (``headers``)."""
        return self.add_fault(Fault(page, times, trickle=interval, trickle_headers=headers))

    def cut_after(self, page: int) -> None:
        """End the listing after ``page`` (no next page; later pages empty), counts unchanged."""
        self.cut_after_page = page

    def cut(self, page: int) -> bool:
        """Whether ``page`` is the last one served by a listing cut short."""
        return self.cut_after_page is not None and page >= self.cut_after_page

    def after_page(self, page: int, action: Callable[[], None]) -> Fault:
        """Run ``action`` once, right after ``page`` was built (e.g. delete a repository)."""
        return self.add_fault(Fault(page, 1, then=action))

    # -- introspection -------------------------------------------------------------------------

    def statuses(self) -> list[int | None]:
        """The statuses answered, in order."""
        with self.lock:
            return [r.status for r in self.requests]

    def listing_requests(self) -> list[RecordedRequest]:
        """The requests for listing pages (not owner lookups or 404s)."""
        with self.lock:
            return [r for r in self.requests if r.page is not None]

    # -- request handling ----------------------------------------------------------------------

    def route(self, req: RecordedRequest, host: str) -> Reply:  # pragma: no cover - abstract
        """Answer a request (``host`` is the Host header, for absolute links)."""
        raise NotImplementedError

    def credential(self, req: RecordedRequest) -> str | None:  # pragma: no cover - abstract
        """The token a request carries, if any."""
        return None

    def authorized(self, req: RecordedRequest) -> bool:
        """Whether the request carries the app's token."""
        return self.credential(req) == self.token

    def authenticated(self, req: RecordedRequest) -> bool:
        """Whether the request is authenticated (any credential when the app has no token)."""
        sent = self.credential(req)
        return sent is not None and (self.token is None or sent == self.token)

    def whoami(self, req: RecordedRequest, login_field: str = "login") -> Reply:
        """``GET /user``: the token's owner; 401 without a credential; 403 for a token that
        cannot say whom it belongs to (``token_owner=None``, like a GitHub App's)."""
        if not self.authenticated(req):
            return Reply.json(401, {"message": "401 Unauthorized"})
        if self.token_owner is None:
            return Reply.json(403, {"message": "Resource not accessible by integration"})
        return Reply.json(200, {login_field: self.token_owner, "id": self.token_owner_id})

    def handle(self, req: RecordedRequest, host: str) -> Reply:
        """Answer one request: route it, then apply faults, and record it."""
        with self.lock:
            self.requests.append(req)
            if (
                self.token is not None
                and self.credential(req) is not None
                and not self.authorized(req)
            ):
                reply = Reply.json(401, {"message": "Bad credentials"})
            else:
                reply = self.route(req, host)
            req.page = reply.page
            for fault in self.faults:
                if reply.page is None or not fault.active():
                    continue  # faults hit listing pages only (not 404s or 401s)
                if fault.page is None or fault.page == reply.page:
                    fault.hits += 1
                    reply = self._apply(fault, reply)
                    if fault.then is not None:
                        fault.then()
                    break
            req.status = reply.status
            return reply

    @staticmethod
    def _apply(fault: Fault, reply: Reply) -> Reply:
        if fault.status is not None:
            return Reply(fault.status, dict(fault.headers), fault.body or b"", reply.page)
        if fault.truncate:
            return Reply(
                reply.status, reply.headers, reply.body[: len(reply.body) // 2], reply.page
            )
        if fault.trickle:
            return Reply(
                reply.status,
                reply.headers,
                reply.body,
                reply.page,
                trickle=fault.trickle,
                trickle_headers=fault.trickle_headers,
            )
        if fault.delay:
            return Reply(reply.status, reply.headers, reply.body, reply.page, fault.delay)
        return reply

    def by_id(self, req: RecordedRequest, rid: str, repos: Iterable[dict], hidden) -> Reply:
        """``GET`` one repository by its id, as every host offers it: 404 when it does not
        exist or the requester cannot see it (``hidden(repo)``: private, or internal to an
        anonymous caller)."""
        with self.lock:
            repo = next((r for r in repos if str(r["id"]) == rid), None)
            if repo is None or (hidden(repo) and not self.authenticated(req)):
                return Reply.json(404, {"message": "Not Found"})
            return Reply.json(200, dict(repo))

    def new_id(self) -> int:
        """A fresh numeric id (repositories, owners, groups)."""
        with self.lock:
            self._next_id += 1
            return self._next_id


def page_links(url, page: int, last: int) -> dict[str, str]:
    """The ``Link`` relations of page ``page`` of ``last`` (``url(n)``: page n's URL), as
    GitHub and Gitea send them: prev and first past page 1, next and last before the end."""
    rels: dict[str, str] = {}
    if page > 1:
        rels["prev"] = url(page - 1)
        rels["first"] = url(1)
    if page < last:
        rels["next"] = url(page + 1)
        rels["last"] = url(last)
    return rels


def _link(rels: dict[str, str]) -> str:
    return ", ".join(f'<{url}>; rel="{rel}"' for rel, url in rels.items())


@dataclass
@dataclass
class _Owner:
    name: str
    kind: str  # "org" | "user" | "group"
    id: int
    repos: list[dict[str, Any]] = field(default_factory=list)
    unlisted_public: int = 0  # public repositories counted but missing from the listing
    unlisted_private: int = 0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001
        pass  # a client that timed out and closed the socket is expected here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes: without this, Nagle + delayed ACK cost ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:  # noqa: N802
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def _serve(self, method: str) -> None:
        app: FakeApp = self.server.app  # type: ignore[attr-defined]
        query = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        headers = {k.lower(): v for k, v in self.headers.items()}
        length = int(headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        req = RecordedRequest(method, self.path, query, headers, body=body)
        host = headers.get("host") or "{}:{}".format(*self.server.server_address[:2])
        try:
            reply = app.handle(req, host)
        except Exception as exc:  # noqa: BLE001 - a bug in the fake: answer 500 and tell
            reply = Reply.json(500, {"message": f"fake crashed: {exc!r}"})
            req.status = 500
        if reply.delay:
            time.sleep(reply.delay)
        if reply.trickle:
            self._trickle(reply)
            return
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            for k, v in reply.headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if reply.body:
                self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _trickle(self, reply: Reply) -> None:
        """Send one byte every ``reply.trickle`` seconds until the client goes (at most 10 min)."""
        if reply.trickle_headers:
            data = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100_000
        else:
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            self.wfile.write(head + b"Content-Length: 1000000000\r\n\r\n[")
            self.wfile.flush()
            data = b" " * 100_000
        end = time.monotonic() + 600
        try:
            for byte in data:
                if time.monotonic() > end:
                    break
                self.wfile.write(bytes((byte,)))
                self.wfile.flush()
                time.sleep(reply.trickle)
        except OSError:
            pass  # the client gave up: what this fault is for
        self.close_connection = True


class FakeCodeHost:
    """Runs ``app`` on ``127.0.0.1:<free port>`` in a background thread (a context manager)."""

    def __init__(self, app: FakeApp) -> None:
        self.app = app
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        assert self._url is not None, "server not started"
        return self._url

    @property
    def host(self) -> str:
        """``127.0.0.1:<port>`` (what sources use as the host in their keys)."""
        return self.url.split("://", 1)[1]

    def start(self) -> FakeCodeHost:
        """Bind and serve in a daemon thread."""
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.app = self.app  # type: ignore[attr-defined]
        host, port = self._server.server_address[:2]
        self._url = f"http://{host}:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeCodeHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def quote_group(path: str) -> str:
    """URL-encode a GitLab group path the way the API wants it (``a/b`` → ``a%2Fb``)."""
    return quote(path, safe="")


class FakeSleep:
    """Records the waits instead of waiting."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def scan(source) -> tuple[list, list]:
    """All records and the verdicts of one scan; exactly one verdict, and it comes last."""
    from enum_pipeline.sources.base import ProjectRecord, ScopeVerdict

    items = list(source.scan())
    records = [i for i in items if isinstance(i, ProjectRecord)]
    verdicts = [i for i in items if isinstance(i, ScopeVerdict)]
    assert len(verdicts) == 1 and items[-1] is verdicts[0]
    return records, verdicts


@dataclass(frozen=True)
class HostContract:
    """How the contract suite (``test_codehost_contract.py``) runs one host's fake and source
    the same way as every other host's; each ``fake_<host>.py`` declares one as ``CONTRACT``."""

    name: str
    page_size: int
    new_app: Callable[..., FakeApp]
    populate: Callable[[Any, int], list[dict[str, Any]]]
    new_source: Callable[..., Any]
    owner: str
    owner_id: Callable[[Any], int]
    rename: Callable[[Any, dict[str, Any], str], None]
    sent_token: Callable[[dict[str, str]], str | None]
    page_2: str  # how page 2's URL shows in a reason
    #: how to delete one item from the app
    delete: Callable[[Any, dict[str, Any]], None]
    #: an item's stable id as records carry it (``attributes["id"]``), and as project keys do
    item_id: Callable[[dict[str, Any]], Any] = lambda item: item["id"]
    key_id: Callable[[dict[str, Any]], str] = lambda item: str(item["id"])
    is_private: Callable[[dict[str, Any]], bool] = lambda item: (
        bool(item.get("private")) or (item.get("visibility") in ("private", "internal"))
    )
    #: a listing page's items, and a page body with other items (most hosts: a JSON list)
    items_of: Callable[[Any], list] = lambda data: data
    with_items: Callable[[Any, list], Any] = lambda data, items: items

    def project_key(self, host: str, item: dict[str, Any]) -> str:
        """The project key of ``item`` read from the fake at ``host`` (its ``host:port``)."""
        return f"{self.name}:{host}:{self.key_id(item)}"

    def make(self, host: FakeCodeHost, owner: str | None = None, **kw) -> Any:
        """The host's source, reading ``owner`` (default: the contract's) on ``host``."""
        kw.setdefault("sleep", FakeSleep())
        return self.new_source(owner or self.owner, base_url=host.url, **kw)
