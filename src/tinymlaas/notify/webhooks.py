"""Webhook delivery: a JSON POST signed with HMAC-SHA256 over the exact body bytes.

Receivers check ``X-Tinymlaas-Signature: sha256=<hex>`` by computing
``hmac.new(secret, body, sha256).hexdigest()`` and comparing in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

from tinymlaas.errors import InvalidInputError

__all__ = ["EVENT_HEADER", "SIGNATURE_HEADER", "check_webhook_url", "deliver_webhook",
           "sign_payload"]

SIGNATURE_HEADER = "X-Tinymlaas-Signature"
EVENT_HEADER = "X-Tinymlaas-Event"


def check_webhook_url(url: str, *, allow_private: bool) -> None:
    """Refuse URLs that are not http(s) or whose host resolves to an internal address.

    Loopback, private, link-local (cloud metadata), multicast and reserved addresses are
    refused unless ``allow_private`` (the ``TINYMLAAS_WEBHOOK_ALLOW_PRIVATE`` setting, for
    receivers on the server's own network). Checked when a webhook is registered and again
    before each delivery, since a name can resolve differently later.

    Raises:
        InvalidInputError: the URL is malformed, does not resolve, or is internal.
    """
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise InvalidInputError("a webhook URL starts with http:// or https:// and names a host")
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidInputError(f"webhook host {parts.hostname!r} does not resolve") from exc
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if not address.is_global or address.is_multicast:
            raise InvalidInputError(
                f"webhook host {parts.hostname!r} resolves to the internal address {address}; "
                "set TINYMLAAS_WEBHOOK_ALLOW_PRIVATE=true to allow receivers on this network",
                {"address": str(address)})


def sign_payload(secret: str, body: bytes) -> str:
    """The signature header value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def deliver_webhook(url: str, secret: str, event: str, payload: dict[str, Any], *,
                    timeout_s: float = 5.0, attempts: int = 3,
                    allow_private: bool = False) -> int:
    """POST ``payload``; retries on connection errors and 5xx. Returns the last status.

    Raises:
        InvalidInputError: the URL now points at an internal address.
        httpx.HTTPError: every attempt failed to connect.
    """
    check_webhook_url(url, allow_private=allow_private)
    body = json.dumps(payload, separators=(",", ":"), default=str).encode()
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign_payload(secret, body),
               EVENT_HEADER: event, "User-Agent": "tinymlaas-webhook"}
    error: httpx.HTTPError | None = None
    status = 0
    for attempt in range(attempts):
        if attempt:
            time.sleep(0.5 * 2 ** (attempt - 1))
        try:
            response = httpx.post(url, content=body, headers=headers, timeout=timeout_s,
                                  follow_redirects=False)
        except httpx.HTTPError as exc:
            error = exc
            continue
        status = response.status_code
        if status < 500:
            return status
    if status or error is None:
        return status
    raise error
