"""Webhook signatures: what the worker signs, a receiver verifies."""

from __future__ import annotations

import hashlib
import hmac
import json

from contract.webhooks import SIGNATURE_HEADER, sign, verify


def test_sign_is_the_hex_hmac_sha256_of_the_raw_body():
    body = json.dumps({"id": "abc", "status": "succeeded"}).encode()
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert sign(body, "s3cret") == f"sha256={expected}"
    assert SIGNATURE_HEADER == "X-Signature"


def test_verify_round_trip_and_tampering():
    body = b'{"id": "abc", "status": "succeeded"}'
    signature = sign(body, "s3cret")
    assert verify(body, "s3cret", signature)
    assert not verify(body + b" ", "s3cret", signature)  # body changed
    assert not verify(body.replace(b"succeeded", b"failed!!!"), "s3cret", signature)
    assert not verify(body, "other", signature)  # wrong secret
    assert not verify(body, "s3cret", signature[:-1] + ("0" if signature[-1] != "0" else "1"))
    assert not verify(body, "s3cret", signature.removeprefix("sha256="))  # scheme required
    assert not verify(body, "s3cret", None) and not verify(body, "s3cret", "")
    assert not verify(body, "s3cret", "sha256=é")
