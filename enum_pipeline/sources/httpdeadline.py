"""A request's wall-clock deadline, enforced on the sockets of ``HttpClient``'s httpx client.

httpx's timeouts bound each socket operation, and restart on every byte a trickling server
sends. ``_Deadline`` (one a thread) holds when the current request must end; the transport
``_deadline_transport`` builds clamps every connect, read and write timeout to what remains of
it, so a request ends by its deadline whatever the server does.
"""

from __future__ import annotations

import functools
import os
import ssl
import threading
import time
from typing import Any

import httpcore
import httpx


class DeadlinePassed(Exception):
    """A request ran past its wall-clock deadline."""


class _Deadline(threading.local):
    """The wall-clock deadline (``time.monotonic``) of the request this thread is sending."""

    at: float | None = None

    def clamp(self, timeout: float | None, exc: type[Exception]) -> float | None:
        """``timeout`` no longer than what remains of the deadline; ``exc`` once it passed."""
        if self.at is None:
            return timeout
        remaining = self.at - time.monotonic()
        if remaining <= 0:
            raise exc("request deadline passed")
        return remaining if timeout is None else min(timeout, remaining)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write ends by the current request's deadline."""

    def __init__(self, stream: httpcore.NetworkStream, deadline: _Deadline) -> None:
        self._stream = stream
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._deadline.clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._deadline.clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        timeout = self._deadline.clamp(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(
            self._stream.start_tls(ssl_context, server_hostname, timeout), self._deadline
        )

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's network backend with every connection bound by the request's deadline."""

    def __init__(self, backend: httpcore.NetworkBackend, deadline: _Deadline) -> None:
        self._backend = backend
        self._deadline = deadline

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        timeout = self._deadline.clamp(timeout, httpcore.ConnectTimeout)
        stream = self._backend.connect_tcp(host, port, timeout, local_address, socket_options)
        return _DeadlineStream(stream, self._deadline)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        timeout = self._deadline.clamp(timeout, httpcore.ConnectTimeout)
        stream = self._backend.connect_unix_socket(path, timeout, socket_options)
        return _DeadlineStream(stream, self._deadline)

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


@functools.lru_cache(maxsize=4)
def _ssl_context(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    return httpx.create_ssl_context()  # reads SSL_CERT_FILE / SSL_CERT_DIR as httpx does


def shared_ssl_context() -> ssl.SSLContext:
    """One TLS context for every client of the process: building one loads the CA bundle
    (~25 ms of CPU), once per source and run before. Contexts are safe to share across
    threads; a changed ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` gets its own."""
    return _ssl_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


def _deadline_transport(deadline: _Deadline) -> httpx.HTTPTransport:
    """An httpx transport whose sockets obey ``deadline`` (httpx has no public hook for a
    network backend; without the attribute the body's clock checks still bound the request)."""
    transport = httpx.HTTPTransport(verify=shared_ssl_context())
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if backend is not None:
        pool._network_backend = _DeadlineBackend(backend, deadline)  # type: ignore[union-attr]
    return transport
