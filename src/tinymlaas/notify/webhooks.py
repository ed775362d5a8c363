"""Webhook delivery: a JSON POST signed with HMAC-SHA256 over the exact body bytes.

Receivers check ``X-Tinymlaas-Signature: sha256=<hex>`` by computing
``hmac.new(secret, body, sha256).hexdigest()`` and comparing in constant time.

Webhooks go to public addresses only (unless ``webhook_allow_private``):

- :func:`check_webhook_url` refuses, when a webhook is registered, URLs that are not
  ``http(s)://host[:port]/...``, that carry user info (``user:pass@``), that name port 0,
  or whose host resolves to an address :func:`address_refusal` refuses. Any other port is
  allowed: the check is about *where* the request goes, and a public host is the
  receiver's own business whatever its port.
- :func:`address_refusal` refuses anything that is not globally routable (loopback,
  private, link-local, shared, documentation, ...), multicast, unspecified, reserved,
  IPv6 site-local, ULA and the NAT64 local-use prefix, and looks *inside* IPv6 forms that
  carry an IPv4 address (IPv4-mapped, IPv4-compatible, IPv4-translated, 6to4, NAT64
  ``64:ff9b::/96``, Teredo server and client) and checks that address too.
- At delivery, the connection itself is guarded (DNS rebinding): :class:`GuardedBackend`,
  the httpcore network backend of every delivery, resolves the host itself, checks every
  address, connects to a checked IP, and checks the connected peer once more. TLS (SNI and
  certificate check) and the ``Host`` header still use the host name, since httpcore does
  TLS above the stream. Redirects are not followed and proxy environment variables are
  ignored.
- Each attempt has one overall deadline (``webhook_timeout_s``) covering connect, TLS,
  sending and receiving the response head, so a receiver that drips bytes cannot hold a
  delivery worker; the response body is never read. Name resolution uses the system
  resolver, whose own timeout applies.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import json
import socket
import ssl
import time
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from tinymlaas.errors import InvalidInputError, UnsafeInputError

__all__ = ["EVENT_HEADER", "SIGNATURE_HEADER", "GuardedBackend", "address_refusal",
           "check_webhook_url", "deliver_webhook", "embedded_ipv4", "post_webhook",
           "sign_payload", "webhook_body"]

SIGNATURE_HEADER = "X-Tinymlaas-Signature"
EVENT_HEADER = "X-Tinymlaas-Event"
MAX_URL_LENGTH = 2048

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_ULA = ipaddress.ip_network("fc00::/7")
_ALLOW_HINT = ("; set TINYMLAAS_WEBHOOK_ALLOW_PRIVATE=true to allow receivers on this "
               "network")


def embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (mapped, compatible, translated, 6to4,
    NAT64, Teredo server and client); empty for IPv4 and plain IPv6 addresses."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found: list[ipaddress.IPv4Address] = []
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    elif ((address in _IPV4_COMPATIBLE and int(address) > 1)  # not :: and ::1 themselves
          or address in _IPV4_TRANSLATED or address in _NAT64):
        found.append(low32)
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)  # (server, client), the client already de-obfuscated
    return found


def _own_refusal(address: IPAddress) -> str | None:
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if isinstance(address, ipaddress.IPv6Address):
        if address.is_site_local:
            return "site-local"
        if address in _ULA:
            return "unique local"
        if address in _NAT64_LOCAL:
            return "NAT64 local-use"
    if address.is_private:
        return "private"
    if address.is_reserved:
        return "reserved"
    if not address.is_global:
        return "not globally routable"
    return None


def address_refusal(address: IPAddress) -> str | None:
    """Why a webhook may not be delivered to ``address``, or None when it is public."""
    for inner in embedded_ipv4(address):
        reason = _own_refusal(inner)
        if reason is not None:
            return f"embeds the {reason} IPv4 address {inner}"
    return _own_refusal(address)


def _parse_ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text.split("%", 1)[0])


def _refuse(host: str, address: IPAddress, reason: str) -> UnsafeInputError:
    return UnsafeInputError(
        f"webhook host {host!r} resolves to the internal address {address} ({reason})"
        + _ALLOW_HINT, {"address": str(address), "reason": reason})


def _parse_url(url: str) -> httpx.URL:
    """The URL as httpx will send it, after the checks that need no name resolution."""
    if len(url) > MAX_URL_LENGTH:
        raise InvalidInputError(f"a webhook URL has at most {MAX_URL_LENGTH} characters")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise InvalidInputError(f"invalid webhook URL: {exc}") from exc
    if parsed.scheme not in {"http", "https"} or not parsed.host:
        raise InvalidInputError("a webhook URL starts with http:// or https:// and names a host")
    if parsed.userinfo:
        raise InvalidInputError("a webhook URL may not carry a user name or password "
                                "(user:pass@); authenticate receivers by the signature")
    if parsed.port == 0:
        raise InvalidInputError("a webhook URL may not name port 0")
    return parsed


def _resolve(host: str, port: int) -> list[tuple[Any, ...]]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidInputError(f"webhook host {host!r} does not resolve") from exc
    if not infos:
        raise InvalidInputError(f"webhook host {host!r} does not resolve")
    return infos


def _check_infos(host: str, infos: Iterable[tuple[Any, ...]]) -> None:
    for info in infos:
        address = _parse_ip(str(info[4][0]))
        reason = address_refusal(address)
        if reason is not None:
            raise _refuse(host, address, reason)


def check_webhook_url(url: str, *, allow_private: bool) -> None:
    """Refuse URLs that are malformed, carry user info, or whose host resolves to an
    address :func:`address_refusal` refuses (any of them, when it has several).

    With ``allow_private`` (the ``TINYMLAAS_WEBHOOK_ALLOW_PRIVATE`` setting, for receivers
    on the server's own network) the address check is off. Checked when a webhook is
    registered; each delivery checks the address it actually connects to.

    Raises:
        InvalidInputError: the URL is malformed or does not resolve.
        UnsafeInputError: the host is (or resolves to) an internal address.
    """
    parsed = _parse_url(url)
    if allow_private:
        return
    _check_infos(parsed.host, _resolve(parsed.host, parsed.port or 443))


# guarded connections ----------------------------------------------------------------------


class _DeadlineStream(httpcore.NetworkStream):
    """A stream whose every operation ends by one deadline (a slow-drip receiver cannot
    stretch an attempt by sending a byte just before each read timeout)."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: float) -> None:
        self._inner = inner
        self._deadline = deadline

    def _left(self, timeout: float | None, error: type[Exception]) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise error("webhook delivery ran out of time")
        return left if timeout is None else min(timeout, left)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(ssl_context, server_hostname,
                                      self._left(timeout, httpcore.ConnectTimeout))
        return _DeadlineStream(inner, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class GuardedBackend(httpcore.SyncBackend):
    """The network backend of webhook deliveries: connects only to checked addresses.

    ``connect_tcp`` resolves the host itself, refuses when any address is internal (unless
    ``allow_private``), connects to the checked IP, and checks the connected peer again;
    every stream it returns ends by ``deadline`` (``time.monotonic()`` seconds).
    """

    def __init__(self, deadline: float, *, allow_private: bool = False) -> None:
        self.deadline = deadline
        self.allow_private = allow_private

    def _left(self, timeout: float | None) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise httpcore.ConnectTimeout("webhook delivery ran out of time")
        return left if timeout is None else min(timeout, left)

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
                    ) -> httpcore.NetworkStream:
        if self.allow_private:
            stream = super().connect_tcp(host, port, self._left(timeout), local_address,
                                         socket_options)
            return _DeadlineStream(stream, self.deadline)
        try:
            infos = _resolve(host, port)
        except InvalidInputError as exc:  # may resolve later: a retryable connect error
            raise httpcore.ConnectError(str(exc)) from exc
        _check_infos(host, infos)
        error: Exception | None = None
        for info in infos:
            address = _parse_ip(str(info[4][0]))
            try:
                stream = super().connect_tcp(str(address), port, self._left(timeout),
                                             local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
                continue
            self._check_peer(host, stream)
            return _DeadlineStream(stream, self.deadline)
        assert error is not None
        raise error

    @staticmethod
    def _check_peer(host: str, stream: httpcore.NetworkStream) -> None:
        sock = stream.get_extra_info("socket")
        try:
            peer = _parse_ip(str(sock.getpeername()[0]))
        except (AttributeError, OSError, ValueError) as exc:
            stream.close()
            raise httpcore.ConnectError(f"could not tell where {host!r} connected") from exc
        reason = address_refusal(peer)
        if reason is not None:
            stream.close()
            raise _refuse(host, peer, reason)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
                            ) -> httpcore.NetworkStream:
        raise UnsafeInputError("webhooks are delivered over TCP only")


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()


class _GuardedTransport(httpx.HTTPTransport):
    """httpx's own transport (request and error mapping) over a pool that connects
    through a :class:`GuardedBackend`."""

    def __init__(self, backend: GuardedBackend) -> None:
        # httpx builds the same pool but gives no way to pass a network backend.
        self._pool = httpcore.ConnectionPool(ssl_context=_ssl_context(), max_connections=1,
                                             max_keepalive_connections=0, http1=True,
                                             http2=False, retries=0, network_backend=backend)


# delivery ---------------------------------------------------------------------------------


def sign_payload(secret: str, body: bytes) -> str:
    """The signature header value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_body(payload: dict[str, Any]) -> bytes:
    """The exact bytes delivered (and signed) for ``payload``."""
    return json.dumps(payload, separators=(",", ":"), default=str).encode()


def post_webhook(url: str, secret: str, event: str, body: bytes, *, timeout_s: float = 5.0,
                 allow_private: bool = False) -> int:
    """One delivery attempt of ``body``, all of it within ``timeout_s``; returns the HTTP
    status (redirects are not followed; the response body is not read).

    Raises:
        InvalidInputError: the URL is malformed.
        UnsafeInputError: the connection would go to an internal address.
        httpx.TransportError: no connection, or no response in time.
    """
    parsed = _parse_url(url)
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign_payload(secret, body),
               EVENT_HEADER: event, "User-Agent": "tinymlaas-webhook"}
    backend = GuardedBackend(time.monotonic() + timeout_s, allow_private=allow_private)
    with httpx.Client(transport=_GuardedTransport(backend), timeout=httpx.Timeout(timeout_s),
                      follow_redirects=False, trust_env=False) as client, \
            client.stream("POST", parsed, content=body, headers=headers) as response:
        return response.status_code


def deliver_webhook(url: str, secret: str, event: str, payload: dict[str, Any], *,
                    timeout_s: float = 5.0, attempts: int = 3,
                    allow_private: bool = False, backoff_s: float = 0.5) -> int:
    """POST ``payload`` here and now, retrying connection errors, timeouts and 5xx with
    exponential backoff; returns the last status. (The server delivers through its
    :class:`~tinymlaas.notify.queue.DeliveryQueue` instead, never in a run's thread.)

    Raises:
        InvalidInputError: the URL is malformed, or points at an internal address.
        httpx.TransportError: every attempt failed to connect or timed out.
    """
    body = webhook_body(payload)
    error: httpx.TransportError | None = None
    status = 0
    for attempt in range(attempts):
        if attempt:
            time.sleep(backoff_s * 2 ** (attempt - 1))
        try:
            status = post_webhook(url, secret, event, body, timeout_s=timeout_s,
                                  allow_private=allow_private)
        except httpx.TransportError as exc:
            error = exc
            continue
        error = None
        if status < 500:
            return status
    if error is not None:
        raise error
    return status
