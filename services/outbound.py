"""Outbound HTTP to URLs our users give us (webhooks), safe from server-side request forgery.

One rule, used when a URL is saved (`check_url`) and again at every connection (`post`):
resolve the host once, refuse it if *any* of its addresses is loopback, private, link-local,
CGNAT, multicast, reserved or unspecified (IPv6 forms that embed an IPv4 address are judged
by that address), and connect to the very address that was checked, so a DNS answer that
changes between the check and the connection (rebinding) changes nothing. The request still
names the host: Host header, TLS SNI and the certificate check use the name, not the address.
`WEBHOOK_ALLOW_PRIVATE=true` lets an operator deliver to internal receivers; `http://` is
refused unless `WEBHOOK_ALLOW_HTTP=true`. Redirects are never followed.

The 5 seconds are a wall-clock limit on the whole delivery, look-up included: socket
timeouts bound each read, not their sum (a receiver sending its status line a byte every
2 s would never time out), so a watchdog shuts the connection's socket at the deadline,
whatever it is doing then (TLS handshake, sending, reading the status line or the body).
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import urllib3
from flask import current_app

from services.errors import ValidationFailed

URL_MAX = 500
TIMEOUT_SECONDS = 5.0
MAX_RESPONSE_BYTES = 4096

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_V4_REFUSED = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",  # "this network", 0.0.0.0 itself
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, cloud metadata (169.254.169.254)
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, broadcast
    )
)
_V6_REFUSED = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "::/96",  # unspecified, loopback, IPv4-compatible (deprecated)
        "::ffff:0:0:0/96",  # IPv4-translated (SIIT)
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard
        "2001::/23",  # IETF protocol assignments, Teredo included
        "2001:db8::/32",  # documentation
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class UnsafeURL(ValidationFailed):
    """A URL we will not post to; the message says why, for the person who typed it."""

    def __init__(self, message: str, field: str = "url") -> None:
        super().__init__(message, details={field: message})
        self.reason = message


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (IPv4-mapped, 6to4, NAT64), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_refused(address: IPAddress) -> bool:
    """True for every address that is not a public unicast one."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return True
        inner = embedded_ipv4(address)
        if inner is not None:
            return is_refused(inner)
        networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = _V6_REFUSED
    else:
        networks = _V4_REFUSED
    return (
        any(address in network for network in networks)
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (the resolved address) and what to call the host."""

    scheme: str
    host: str
    port: int
    path: str
    addresses: tuple[str, ...]

    @property
    def host_header(self) -> str:
        name = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return name if self.port == default else f"{name}:{self.port}"


def _settings(allow_private: bool | None, allow_http: bool | None) -> tuple[bool, bool]:
    config = current_app.config
    if allow_private is None:
        allow_private = bool(config.get("WEBHOOK_ALLOW_PRIVATE"))
    if allow_http is None:
        allow_http = bool(config.get("WEBHOOK_ALLOW_HTTP"))
    return allow_private, allow_http


def _parse(url: object, allow_http: bool) -> tuple[str, str, int, str]:
    if not isinstance(url, str) or not url.strip():
        raise UnsafeURL("Enter the endpoint's URL.")
    url = url.strip()
    if len(url) > URL_MAX:
        raise UnsafeURL(f"At most {URL_MAX} characters.")
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise UnsafeURL("The URL may not contain spaces or control characters.")
    schemes = ("https", "http") if allow_http else ("https",)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeURL("That is not a URL Keysmith can post to.") from None
    if parts.scheme not in schemes or not parts.hostname:
        raise UnsafeURL(
            "Enter a full https:// or http:// URL."
            if allow_http
            else "Enter a full https:// URL (this server does not post to http://)."
        )
    if parts.username is not None or parts.password is not None:
        raise UnsafeURL("Leave user names and passwords out of the URL.")
    try:
        host = parts.hostname.encode("idna").decode("ascii")
    except UnicodeError:
        raise UnsafeURL("The host name is not valid.") from None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, host, port or (443 if parts.scheme == "https" else 80), path


class _Lookups:
    """getaddrinfo has no timeout of its own, and a thread blocked in it cannot be stopped:
    each look-up runs in a daemon thread of its own, and we stop waiting at the deadline.

    A look-up holds one of `slots` shared slots only until it answers or its deadline
    passes, whichever comes first; a straggler (still blocked after its deadline) counts
    only against its tenant's share of `per_tenant` look-ups in flight. So a tenant whose
    DNS never answers uses up its own share, and never the slots every tenant's look-ups
    need (a shared pool of 4 threads was the review's finding: four hung look-ups of one
    organization made every organization's deliveries fail). `stragglers` bounds the
    threads left blocked in all, against memory, should many tenants hang at once.
    """

    def __init__(self, slots: int = 16, per_tenant: int = 4, stragglers: int = 128) -> None:
        self.per_tenant = per_tenant
        self.max_stragglers = stragglers
        self._slots = threading.BoundedSemaphore(slots)
        self._lock = threading.Lock()
        self._in_flight: dict[object, int] = {}
        self.stragglers = 0

    def in_flight(self, tenant: object) -> int:
        with self._lock:
            return self._in_flight.get(tenant, 0)

    def resolve(self, host: str, port: int, timeout: float, tenant: object) -> list:
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._in_flight.get(tenant, 0) >= self.per_tenant:
                raise OSError("too many look-ups of this organization in flight")
            if self.stragglers >= self.max_stragglers:
                raise OSError("too many look-ups are hanging")
            self._in_flight[tenant] = self._in_flight.get(tenant, 0) + 1
        if not self._slots.acquire(timeout=max(deadline - time.monotonic(), 0)):
            self._finish(tenant, straggler=False)
            raise OSError("the name did not resolve in time")
        state: dict[str, Any] = {"finished": False, "straggler": False}
        done = threading.Event()

        def run() -> None:
            try:
                state["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                state["error"] = exc
            finally:
                with self._lock:
                    state["finished"] = True
                    straggler = state["straggler"]
                self._finish(tenant, straggler=straggler)
                done.set()

        try:
            threading.Thread(target=run, name="resolve", daemon=True).start()
        except RuntimeError:
            self._slots.release()
            self._finish(tenant, straggler=False)
            raise OSError("could not start a look-up") from None
        done.wait(max(deadline - time.monotonic(), 0))
        self._slots.release()  # answered or not, the shared slot is free again now
        with self._lock:
            if not state["finished"]:
                state["straggler"] = True
                self.stragglers += 1
        if state["straggler"]:
            raise OSError("the name did not resolve in time")
        if "error" in state:
            raise state["error"]
        return state["infos"]

    def _finish(self, tenant: object, *, straggler: bool) -> None:
        with self._lock:
            left = self._in_flight.get(tenant, 1) - 1
            if left:
                self._in_flight[tenant] = left
            else:
                self._in_flight.pop(tenant, None)
            if straggler:
                self.stragglers -= 1


_LOOKUPS = _Lookups()


def _resolve(host: str, port: int, timeout: float, tenant: object = None) -> tuple[str, ...]:
    """Every address the host resolves to, in the resolver's order, each once; `tenant`
    (the organization's id) is whose share of look-ups it uses."""
    infos = _LOOKUPS.resolve(host, port, timeout, tenant)
    return tuple(dict.fromkeys(info[4][0] for info in infos))


def resolve_target(
    url: object,
    *,
    allow_private: bool | None = None,
    allow_http: bool | None = None,
    timeout: float | None = None,
    tenant: object = None,
) -> Target:
    """Check the URL and resolve its host (once, within `timeout` seconds, on `tenant`'s
    share of look-ups); UnsafeURL if we may not post there."""
    allow_private, allow_http = _settings(allow_private, allow_http)
    scheme, host, port, path = _parse(url, allow_http)
    try:
        addresses = _resolve(host, port, TIMEOUT_SECONDS if timeout is None else timeout, tenant)
    except (OSError, UnicodeError):
        raise UnsafeURL(f"The host {host} could not be resolved.") from None
    if not addresses:
        raise UnsafeURL(f"The host {host} could not be resolved.")
    if not allow_private:
        for text in addresses:
            if is_refused(ipaddress.ip_address(text.split("%")[0])):
                raise UnsafeURL(
                    "That address is not allowed: it is on this host or a private, "
                    "link-local or reserved network."
                )
    return Target(scheme, host, port, path, addresses)


def check_url(
    url: object,
    *,
    allow_private: bool | None = None,
    allow_http: bool | None = None,
    tenant: object = None,
) -> str:
    """The URL, trimmed, if we may post to it; UnsafeURL otherwise.

    On save a host that does not resolve (yet) is accepted: it cannot point anywhere now,
    and every delivery resolves and checks it again.
    """
    try:
        resolve_target(url, allow_private=allow_private, allow_http=allow_http, tenant=tenant)
    except UnsafeURL as exc:
        if "could not be resolved" not in exc.reason:
            raise
    return str(url).strip()


@dataclass(frozen=True)
class Result:
    status: int | None
    body: bytes
    duration_ms: int
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status is not None and 200 <= self.status < 300


class _Deadline:
    """Shuts every socket it watches when the time is up, from a timer thread: a blocked
    recv(), send() or TLS handshake then returns at once, and the request fails."""

    def __init__(self, at: float) -> None:
        self.at = at
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(at - time.monotonic(), 0.0), self._expire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            expired = self.expired
        if expired:
            self._shut(sock)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        # The plain socket's shutdown, also for an SSLSocket (whose own drops its TLS state
        # under the thread reading it). A closed or detached socket has no descriptor left
        # (fileno -1): the call fails harmlessly, never on a descriptor reused since.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            self._shut(sock)

    def cancel(self) -> None:
        self._timer.cancel()


def _watched(base: type, deadline: _Deadline) -> type:
    """A urllib3 connection class whose sockets the deadline watches: the TCP socket as
    soon as it is connected (so a slow TLS handshake is cut too), then the TLS one."""

    class Watched(base):  # type: ignore[misc, valid-type]
        def _new_conn(self):
            sock = super()._new_conn()
            deadline.watch(sock)
            return sock

        def connect(self):
            super().connect()
            if self.sock is not None:
                deadline.watch(self.sock)

    return Watched


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    timeout: float | None = None,
    allow_private: bool | None = None,
    allow_http: bool | None = None,
    tenant: object = None,
) -> Result:
    """POST once to the checked address, all of it within `timeout` (TIMEOUT_SECONDS)
    seconds of wall-clock time: look-up, connection, TLS, request and answer. Never raises
    for the receiver's faults. `tenant` (the organization's id) shares out the look-ups."""
    started = time.monotonic()
    timeout = TIMEOUT_SECONDS if timeout is None else timeout

    def done(status: int | None, error: str | None, data: bytes = b"") -> Result:
        return Result(status, data, int((time.monotonic() - started) * 1000), error)

    try:
        target = resolve_target(
            url, allow_private=allow_private, allow_http=allow_http, timeout=timeout, tenant=tenant
        )
    except UnsafeURL as exc:
        return done(None, exc.reason)
    deadline = _Deadline(started + timeout)
    left = deadline.remaining()
    if left <= 0:
        deadline.cancel()
        return done(None, "timed out")
    address = target.addresses[0]
    pool_host = f"[{address}]" if ":" in address else address
    options: dict = {
        # Each socket operation gets at most what is left; the watchdog bounds their sum.
        "timeout": urllib3.Timeout(connect=left, read=left),
        "retries": False,
        "maxsize": 1,
    }
    if target.scheme == "https":
        pool: urllib3.HTTPConnectionPool = urllib3.HTTPSConnectionPool(
            pool_host,
            target.port,
            server_hostname=target.host,
            assert_hostname=target.host,
            cert_reqs="CERT_REQUIRED",
            **options,
        )
    else:
        pool = urllib3.HTTPConnectionPool(pool_host, target.port, **options)
    pool.ConnectionCls = _watched(pool.ConnectionCls, deadline)
    request_headers = {"Host": target.host_header, **headers}
    try:
        response = pool.urlopen(
            "POST",
            target.path,
            body=body,
            headers=request_headers,
            redirect=False,
            retries=False,
            assert_same_host=False,
            preload_content=False,
        )
        data = b""
        try:
            while len(data) < MAX_RESPONSE_BYTES and deadline.remaining() > 0:
                chunk = response.read1(MAX_RESPONSE_BYTES - len(data))
                if not chunk:
                    break
                data += chunk
        finally:
            response.close()  # the rest of the body is never read
        if deadline.expired:
            return done(None, "timed out", data)
        if 300 <= response.status < 400:
            return done(response.status, "redirects are not followed", data)
        if not 200 <= response.status < 300:
            return done(response.status, f"HTTP {response.status}", data)
        return done(response.status, None, data)
    except urllib3.exceptions.NewConnectionError:  # first: urllib3 makes it a TimeoutError too
        return done(None, "timed out" if deadline.expired else "connection refused or unreachable")
    except (urllib3.exceptions.TimeoutError, TimeoutError):
        return done(None, "timed out")
    except urllib3.exceptions.SSLError:
        if deadline.expired:
            return done(None, "timed out")
        return done(None, "TLS handshake or certificate check failed")
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        if deadline.expired:
            return done(None, "timed out")
        return done(None, f"connection failed ({type(exc).__name__})")
    finally:
        deadline.cancel()
        pool.close()
