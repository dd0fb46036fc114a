"""Webhook delivery: the final job document POSTed to the job's `webhook_url`, signed with
`X-Signature: sha256=<hex HMAC-SHA256(body, WEBHOOK_SECRET)>` by contract.webhooks.sign, the one
signing (and `verify`) the API documents.

Each delivery runs in its own daemon thread, retried with exponential backoff, so that a slow or dead
receiver never holds up the sampler loop, and never keeps a stopping worker alive past `drain`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from contract.webhooks import SIGNATURE_HEADER, sign

log = logging.getLogger(__name__)


def encode(document: dict[str, Any]) -> bytes:
    """The exact bytes that are signed and sent."""
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


class WebhookSender:
    """Delivers documents in background threads: up to `max_attempts` tries, waiting base_delay,
    2 * base_delay, 4 * base_delay... between them."""

    def __init__(self, secret: str, timeout: float = 5.0, max_attempts: int = 5, base_delay: float = 0.5) -> None:
        self.secret, self.timeout, self.max_attempts, self.base_delay = secret, timeout, max_attempts, base_delay
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()

    def send(self, url: str, document: dict[str, Any]) -> None:
        """Start delivering `document` to `url`; returns at once."""
        thread = threading.Thread(target=self._deliver, args=(url, encode(document), document.get("id")),
                                  name=f"webhook-{document.get('id')}", daemon=True)
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def _deliver(self, url: str, body: bytes, job_id: Any) -> None:
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(body, self.secret),
                   "User-Agent": "imagegen-worker"}
        try:
            for attempt in range(1, self.max_attempts + 1):
                try:
                    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
                    with urllib.request.urlopen(request, timeout=self.timeout) as response:
                        log.info("webhook of job %s delivered to %s (HTTP %s)", job_id, url, response.status)
                        return
                except (urllib.error.URLError, OSError, ValueError) as e:
                    # HTTPError (a non-2xx answer) is a URLError: retried like a connection error
                    why = f"HTTP {e.code}" if isinstance(e, urllib.error.HTTPError) else str(e)
                    if attempt == self.max_attempts:
                        log.warning("webhook of job %s to %s failed %d times, giving up: %s",
                                    job_id, url, attempt, why)
                        return
                    delay = self.base_delay * 2 ** (attempt - 1)
                    log.info("webhook of job %s to %s failed (%s); retry %d in %.1f s", job_id, url, why,
                             attempt + 1, delay)
                    time.sleep(delay)
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def pending(self) -> int:
        """Deliveries still under way."""
        with self._lock:
            return len(self._threads)

    def drain(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for deliveries under way; True if none is left."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                threads = list(self._threads)
            if not threads:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            threads[0].join(left)
