"""Webhook delivery: a JSON POST signed with HMAC-SHA256 over the exact body bytes.

Receivers check ``X-Tinymlaas-Signature: sha256=<hex>`` by computing
``hmac.new(secret, body, sha256).hexdigest()`` and comparing in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import httpx

__all__ = ["EVENT_HEADER", "SIGNATURE_HEADER", "deliver_webhook", "sign_payload"]

SIGNATURE_HEADER = "X-Tinymlaas-Signature"
EVENT_HEADER = "X-Tinymlaas-Event"


def sign_payload(secret: str, body: bytes) -> str:
    """The signature header value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def deliver_webhook(url: str, secret: str, event: str, payload: dict[str, Any], *,
                    timeout_s: float = 5.0, attempts: int = 3) -> int:
    """POST ``payload``; retries on connection errors and 5xx. Returns the last status.

    Raises:
        httpx.HTTPError: every attempt failed to connect.
    """
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
