"""The playground against a service with API_KEYS (see test_e2e_page.py for the set-up): the page asks
for a key, says when one is refused, then sends it with every request: the JSON calls, the event
stream (read with fetch, since EventSource cannot send a header) and the images (fetched into blob
URLs, since <img src> cannot either). The key stays in the tab unless the user asks to remember it.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from e2e_support import Service, running_service
from test_e2e_page import UI_MS, browser, check_guard, guard, new_page, page, wait_images_loaded, wait_status  # noqa: F401
from test_e2e_page_img2img import WATCH

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

KEY = "playground-key-1"
OTHER = "another-key-2"
STORAGE = "imagegen.playground.key"


@pytest.fixture(scope="module")
def service(tmp_path_factory, tiny_store_root) -> Iterator[Service]:
    """The service of conftest.py, with two API keys configured."""
    with running_service(tmp_path_factory.mktemp("e2e-keys"), tiny_store_root, API_KEYS=f"{KEY},{OTHER}") as service:
        yield service


def stored_key(page) -> dict:
    return page.evaluate(f"() => ({{ session: sessionStorage.getItem('{STORAGE}'), "
                         f"local: localStorage.getItem('{STORAGE}') }})")


def enter_key(page, key: str, remember: bool = False) -> None:
    page.fill("#api-key", key)
    page.set_checked("#key-remember", remember)
    page.click("#key-use")


def test_the_page_asks_for_a_key_then_sends_it_everywhere(browser, guard, service, tmp_path):  # noqa: F811
    page = new_page(browser, guard)
    sent: list[tuple[str, str | None]] = []  # (path, Authorization) of every API request
    page.on("request", lambda r: sent.append((r.url.removeprefix(service.url), r.headers.get("authorization")))
            if r.url.startswith(service.url) else None)
    try:
        page.goto(service.url + "/")
        # no key: the models answer 401, and the page asks for one
        page.locator("#key-form").wait_for(state="visible")
        page.wait_for_function("() => document.getElementById('key-status').textContent.includes('needs an API key')")
        assert page.is_visible("#load-error") and page.is_disabled("#generate")
        assert page.get_attribute("#api-key", "type") == "password"
        assert page.is_hidden("#key-forget")

        # a wrong key is refused (403) and said so
        enter_key(page, "not-a-key")
        page.wait_for_function("() => document.getElementById('key-status').textContent.includes('refused this key')")
        assert page.get_attribute("#api-key", "aria-invalid") == "true"

        # the right key, for this tab only: the form loads, the key is in sessionStorage alone
        enter_key(page, KEY)
        page.wait_for_selector("html[data-ready=true]", state="attached")
        assert page.is_hidden("#load-error") and page.is_enabled("#generate") and page.is_visible("#key-forget")
        assert page.input_value("#api-key") == ""  # not left in the field
        assert stored_key(page) == {"session": KEY, "local": None}

        # a job with previews: they come only through the event stream
        page.evaluate(WATCH)
        page.fill("#steps", "40")
        page.fill("#num_images", "2")
        page.fill("#seed", "77")
        page.click("#generate")
        assert wait_status(page, "succeeded", "failed", "canceled") == "succeeded", service.processes.report()
        assert wait_images_loaded(page, 2) == [28, 28]
        assert page.evaluate("() => window.__seen.previews") >= 1
        srcs = page.eval_on_selector_all("#results .images img", "imgs => imgs.map(i => i.src)")
        assert all(s.startswith("blob:") for s in srcs)
        hrefs = page.eval_on_selector_all("#results .images a", "links => links.map(a => a.href)")
        assert hrefs == srcs  # the download links hold the fetched PNGs
        page.wait_for_function("() => document.querySelector('#results .results-head a').href.startsWith('blob:')")

        job_id = page.get_attribute("#job", "data-job")
        # the job belongs to the key: its owner reads it, the other key gets the 404 of no job
        mine = httpx.get(f"{service.url}/jobs/{job_id}", headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
        assert mine.status_code == 200 and mine.json()["status"] == "succeeded"
        assert httpx.get(f"{service.url}/jobs/{job_id}", headers={"Authorization": f"Bearer {OTHER}"},
                         timeout=30).status_code == 404

        # every API request after the key was entered carried it: the calls, the stream, the images
        api = [(path, auth) for path, auth in sent if path.startswith(("/models", "/samplers", "/generate", "/jobs/"))]
        after = api[next(i for i, (_, auth) in enumerate(api) if auth == f"Bearer {KEY}"):]
        assert [p for p, auth in after if auth != f"Bearer {KEY}"] == []
        paths = [p for p, _ in after]
        assert f"/jobs/{job_id}/events" in paths and f"/jobs/{job_id}/images/0.png" in paths
        assert any(p.startswith("/generate") for p in paths)

        # a reload keeps the tab's key: the page loads at once and the history's thumbnails show
        page.reload()
        page.wait_for_selector("html[data-ready=true]", state="attached")
        page.wait_for_function(
            "id => [...document.querySelectorAll(`.history-item[data-job='${id}'] img`)]"
            ".filter(i => i.complete && i.naturalWidth > 0).length === 2", arg=job_id, timeout=UI_MS)

        # forgetting the key clears it, and the page asks again
        page.click("#key-forget")
        page.wait_for_function("() => document.getElementById('key-status').textContent.includes('needs an API key')")
        assert stored_key(page) == {"session": None, "local": None}
        assert page.is_disabled("#generate")

        # remembered on this device: another tab of the same browser profile needs no key
        enter_key(page, KEY, remember=True)
        page.wait_for_selector("html[data-ready=true]", state="attached")
        assert stored_key(page) == {"session": None, "local": KEY}
        other = page.context.new_page()
        other.goto(service.url + "/")
        other.wait_for_selector("html[data-ready=true]", state="attached")
        assert other.is_enabled("#generate") and other.is_visible("#key-forget")
        page.screenshot(path=str(tmp_path / "keyed.png"), full_page=True)
    finally:
        page.context.close()
    check_guard(guard)


# the page's event-stream parser (api.js eventParser), run in the browser on chunks cut everywhere a
# network can cut them: inside a line, between the \r and \n of one break, inside the blank line
PARSE = """async (chunks) => {
  const { eventParser } = await import('./static/api.js');
  const seen = [];
  const push = eventParser((name, data) => seen.push([name, data]));
  for (const c of chunks) push(c);
  return seen;
}"""

STREAM = ("event: progress\r\ndata: {\"step\": 1, \"total\": 2}\r\n\r\n"
          ": ping\r\n\r\n"
          "data: first line\r\ndata: second line\r\n\r\n"
          "event: end\r\ndata: {\"status\": \"succeeded\"}\r\n\r\n"
          "event: end\r\ndata: never ended")
EVENTS = [["progress", '{"step": 1, "total": 2}'], ["message", "first line\nsecond line"],
          ["end", '{"status": "succeeded"}']]


def test_the_event_stream_parser_takes_chunks_cut_anywhere(page, service):  # noqa: F811
    page.goto(service.url + "/")
    assert page.evaluate(PARSE, [STREAM]) == EVENTS
    for cut in range(1, len(STREAM)):  # every two-chunk split, the \r|\n ones among them
        assert page.evaluate(PARSE, [STREAM[:cut], STREAM[cut:]]) == EVENTS, f"cut at {cut}: {STREAM[:cut]!r}"
    assert page.evaluate(PARSE, list(STREAM)) == EVENTS  # one character at a time
    # bare \n and bare \r line breaks are breaks too (the format allows all three)
    assert page.evaluate(PARSE, [STREAM.replace("\r\n", "\n")]) == EVENTS
    assert page.evaluate(PARSE, [STREAM.replace("\r\n", "\r")]) == EVENTS
    # an event is handed on as soon as its blank line arrives, with no wait for the next chunk
    assert page.evaluate(PARSE, ["event: end\rdata: x\r\r"]) == [["end", "x"]]
