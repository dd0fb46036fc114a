"""Webhook signatures: `X-Signature: sha256=<hex HMAC-SHA256 of the raw body with WEBHOOK_SECRET>`.

The worker signs and delivers; a receiver checks with `verify` on the exact bytes it received
(re-serializing the JSON would change them). An empty secret still signs, but then anybody can
forge the signature: set WEBHOOK_SECRET wherever webhooks matter.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Signature"
"""The header carrying the signature."""

_SCHEME = "sha256="


def sign(body: bytes, secret: str) -> str:
    """The X-Signature value of `body`: "sha256=" and the hex HMAC-SHA256 keyed by `secret`."""
    return _SCHEME + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: str, signature: str | None) -> bool:
    """Whether `signature` (an X-Signature value) signs `body` with `secret`; constant-time."""
    if not signature:
        return False
    return hmac.compare_digest(sign(body, secret).encode(), signature.strip().encode())
