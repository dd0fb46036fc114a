"""The playground page in a real browser: Debian's Chromium, headless, driven by Playwright, against the
real service (a private Redis, `imagegen serve` and `imagegen worker` on the tiny models; conftest.py).

Every request the page makes is routed through the test, which fails it on any request to a host other
than the service. Every wait is bounded.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _browser_missing() -> list[str]:
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install playwright)")
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    return missing


if _browser_missing():
    _why = f"browser tests need {' and '.join(_browser_missing())}; scripts/setup.sh installs both"
    if os.environ.get("REQUIRE_BROWSER"):
        # scripts/test.sh sets REQUIRE_BROWSER: there the set-up should have installed them
        pytest.fail(f"REQUIRE_BROWSER is set, but {_why}", pytrace=False)
    pytest.skip(_why, allow_module_level=True)

from playwright.sync_api import Browser, Page, Route, sync_playwright  # noqa: E402

from model_store.weights import save_model  # noqa: E402

JOB_S = 120.0
"""Most seconds a small job takes on the busy CPU, from submit to images."""

UI_MS = 30_000
"""Most milliseconds any single page action or wait gets unless it says otherwise."""

# what the card of the `swept` model says it measured: made-up figures in the shape evaluate_cmd.py
# writes, so that the quality tab has a sweep to draw (scale 0 is unconditional: no accuracy)
SWEEP = [
    {"sampler": "ddim", "steps": 50, "guidance": "cfg", "guidance_scale": s, "eta": 0.0, "fd": fd, "accuracy": acc,
     "n": 10000, "sampling_seconds": 12.5}
    for s, fd, acc in [(0.0, 9.1, None), (1.0, 4.2, 0.78), (1.5, 3.1, 0.86), (2.0, 3.4, 0.91), (3.0, 4.6, 0.95),
                       (4.0, 6.0, 0.97)]
]
QUALITY = {"guidance_sweep": SWEEP, "floor": {"fd": 0.9, "n": 10000, "what": "training images against the test set"},
           "eval_classifier": "fmnist-eval-classifier@1", "per_class": 1000}


REPO = Path(__file__).resolve().parents[2]

SHIPPED_NOTES = json.loads((REPO / "model_store/models/fashion-mnist/2/card.json").read_text())["notes"]
"""The notes paragraph of the shipped interim model's card: the long one a first-time visitor meets."""


@pytest.fixture(scope="module")
def tiny_store_root(tiny_store_root, tmp_path_factory) -> Path:
    """The session's tiny store (copied, so other modules see it unchanged) plus `swept`: the tiny
    generator again, with a measured guidance sweep and the shipped model's notes in its card."""
    from stores import fp16, generator_fields, randomized_unet

    from model_store import ModelStore

    root = tmp_path_factory.mktemp("page-store")
    shutil.copytree(tiny_store_root, root, dirs_exist_ok=True)
    save_model(ModelStore(root), "swept", fp16(randomized_unet()),
               generator_fields(quality=QUALITY, notes=SHIPPED_NOTES))
    return root


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


class Guard:
    """Routes every request of a page: ones to the service go on (`rewrite` may change their URL,
    as a proxy would), any other is aborted and remembered, which fails the test."""

    def __init__(self, service_url: str) -> None:
        self.origin = urlsplit(service_url).netloc
        self.foreign: list[str] = []
        self.seen: list[str] = []
        self.errors: list[str] = []
        self.rewrite = lambda url: url

    def __call__(self, route: Route) -> None:
        url = route.request.url
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob", "about"):
            route.continue_()
        elif parts.netloc != self.origin:
            self.foreign.append(url)
            route.abort()
        else:
            self.seen.append(url)
            target = self.rewrite(url)
            route.continue_(url=target) if target != url else route.continue_()


@pytest.fixture
def guard(service) -> Guard:
    return Guard(service.url)


def new_page(browser: Browser, guard: Guard, **context_options) -> Page:
    context = browser.new_context(**{"viewport": {"width": 1280, "height": 900}, **context_options})
    context.set_default_timeout(UI_MS)
    context.route("**/*", guard)
    page = context.new_page()
    page.on("pageerror", lambda e: guard.errors.append(str(e)))
    return page


@pytest.fixture
def page(browser, guard, service) -> Iterator[Page]:
    page = new_page(browser, guard)
    yield page
    page.context.close()
    check_guard(guard)


def check_guard(guard: Guard) -> None:
    assert not guard.foreign, f"the page sent requests to other hosts: {guard.foreign}"
    assert not guard.errors, f"uncaught errors in the page: {guard.errors}"


def open_page(page: Page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("html[data-ready=true]", state="attached")


def wait_status(page: Page, *statuses: str, timeout_s: float = JOB_S) -> str:
    """The job panel's status once it is one of `statuses`."""
    selector = ", ".join(f"#job[data-status={s}]" for s in statuses)
    page.wait_for_selector(selector, state="attached", timeout=timeout_s * 1000)
    return page.get_attribute("#job", "data-status")


def wait_images_loaded(page: Page, count: int) -> list[int]:
    """The natural widths of the result images, once `count` of them have loaded."""
    page.wait_for_function(
        "n => { const imgs = [...document.querySelectorAll('#results .images img')];"
        " return imgs.length === n && imgs.every(i => i.complete && i.naturalWidth > 0); }",
        arg=count, timeout=UI_MS)
    return page.eval_on_selector_all("#results .images img", "imgs => imgs.map(i => i.naturalWidth)")


def job_document(service, job_id: str) -> dict:
    r = httpx.get(f"{service.url}/jobs/{job_id}", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


# --- the tests ---------------------------------------------------------------------------------


def test_generate_four_images_of_a_class_picked_by_name(page, service, tmp_path):
    open_page(page, service.url + "/")
    page.select_option("#class_label", label="Sneaker")
    page.fill("#num_images", "4")
    page.fill("#seed", "1234")
    page.click("#generate")
    status = wait_status(page, "succeeded", "failed", "canceled")
    assert status == "succeeded", f"{page.text_content('#status')}\n{service.processes.report()}"

    assert wait_images_loaded(page, 4) == [28] * 4
    assert page.locator("#results .seed").all_text_contents() == ["1234", "1235", "1236", "1237"]
    job_id = page.get_attribute("#job", "data-job")
    doc = job_document(service, job_id)
    assert doc["request"]["class_label"] == 7 and doc["request"]["seed"] == 1234  # "Sneaker" is class 7

    # each image downloads as the PNG the API serves
    link = page.locator("#results .images a").nth(2)
    assert link.get_attribute("download").endswith(".png")
    png = httpx.get(link.evaluate("a => a.href"), timeout=30)
    assert png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size == (28, 28)

    # the history holds the job, with thumbnails
    entry = page.locator(f'#history .history-item[data-job="{job_id}"]')
    entry.wait_for()
    page.wait_for_function(
        "id => [...document.querySelectorAll(`.history-item[data-job='${id}'] img`)]"
        ".filter(i => i.complete && i.naturalWidth > 0).length === 4", arg=job_id, timeout=UI_MS)
    stored = page.evaluate("() => JSON.parse(localStorage.getItem('imagegen.playground.history'))")
    assert stored[0]["id"] == job_id and stored[0]["request"]["seed"] == "1234"

    screenshot = tmp_path / "playground.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert Image.open(screenshot).size[0] == 1280

    # "Reuse" under the third image: its seed, one image, the same class
    page.get_by_role("button", name="Reuse settings with seed 1236").click()
    assert page.input_value("#seed") == "1236" and page.input_value("#num_images") == "1"
    assert page.eval_on_selector("#class_label", "s => s.selectedOptions[0].textContent") == "Sneaker"

    # a click on the history entry shows its images again (after a reload: from localStorage)
    page.reload()
    page.wait_for_selector("html[data-ready=true]", state="attached")
    page.locator(f'#history .history-item[data-job="{job_id}"]').click()
    assert wait_images_loaded(page, 4) == [28] * 4


def test_an_invalid_value_shows_the_api_error_next_to_its_field(page, service, tmp_path):
    open_page(page, service.url + "/")
    page.fill("#steps", "0")
    page.click("#generate")
    error = page.locator('.field[data-field="steps"] #steps-error')
    error.wait_for(state="visible")

    expected = httpx.post(f"{service.url}/generate", json={"class_label": 0, "steps": 0}, timeout=30).json()
    assert expected["errors"] == [{"field": "steps", "message": "must be between 1 and 1000 (got 0)"}]
    assert error.text_content() == expected["errors"][0]["message"]
    assert page.get_attribute("#steps", "aria-invalid") == "true"
    assert page.evaluate("() => document.activeElement.id") == "steps"
    assert page.is_hidden("#job") and page.is_enabled("#generate")
    page.screenshot(path=str(tmp_path / "invalid-steps.png"))
    # a valid resubmit clears the error
    page.fill("#steps", "2")
    page.fill("#num_images", "1")
    page.click("#generate")
    assert wait_status(page, "succeeded", "failed", "canceled") == "succeeded"
    assert page.text_content("#steps-error") == ""


def test_cancel_during_a_long_job(page, service, tmp_path):
    open_page(page, service.url + "/")
    page.select_option("#sampler", "ddpm")
    assert page.is_hidden("#eta-field")  # eta is for ddim only
    page.fill("#steps", "1000")
    page.fill("#num_images", "4")
    page.click("#generate")
    # running: the progress bar follows the event stream
    assert wait_status(page, "running", "succeeded", "failed", "canceled") == "running"
    page.wait_for_function("() => document.getElementById('progress').value >= 1", timeout=UI_MS)
    assert page.get_attribute("#progress", "max") == "1000"
    page.click("#cancel")
    assert wait_status(page, "canceled", "succeeded", "failed", timeout_s=60) == "canceled"
    assert "canceled" in page.text_content("#status")
    assert page.is_hidden("#cancel") and page.is_enabled("#generate")
    page.screenshot(path=str(tmp_path / "canceled.png"))
    # canceled, not deleted: the job stays readable
    assert job_document(service, page.get_attribute("#job", "data-job"))["status"] == "canceled"


def test_delete_from_the_history_removes_the_job_on_the_service_too(page, service, tmp_path):
    open_page(page, service.url + "/")
    page.fill("#num_images", "1")
    page.fill("#steps", "2")
    page.click("#generate")
    assert wait_status(page, "succeeded", "failed", "canceled") == "succeeded"
    job_id = page.get_attribute("#job", "data-job")
    assert httpx.get(f"{service.url}/jobs/{job_id}/images/0.png", timeout=30).status_code == 200

    delete = page.locator(f'#history .history-delete[data-job="{job_id}"]')
    assert delete.get_attribute("aria-label").startswith(f"Delete job {job_id[:8]}")
    page.screenshot(path=str(tmp_path / "history.png"))
    delete.click()
    page.locator(f'#history .history-item[data-job="{job_id}"]').wait_for(state="detached")
    stored = page.evaluate("() => JSON.parse(localStorage.getItem('imagegen.playground.history') || '[]')")
    assert job_id not in [e["id"] for e in stored]
    assert page.is_hidden("#job") and page.locator("#results .images img").count() == 0
    for path in (f"/jobs/{job_id}", f"/jobs/{job_id}/images/0.png", f"/jobs/{job_id}/grid.png"):
        assert httpx.get(f"{service.url}{path}", timeout=30).status_code == 404, path


def test_the_model_card_is_one_line_and_its_details_are_a_click_away(browser, guard, service, tmp_path):
    page = new_page(browser, guard, viewport={"width": 1280, "height": 1000})
    try:
        open_page(page, service.url + "/")
        page.select_option("#model", "swept@1")  # the card with the shipped model's long notes
        assert page.text_content("#model-hint") == "28×28 grayscale · 10 classes · interim"
        lines = page.evaluate("() => { const r = document.createRange();"
                              " r.selectNodeContents(document.getElementById('model-hint'));"
                              " return new Set([...r.getClientRects()].map(b => Math.round(b.top))).size; }")
        assert lines == 1, "the summary wraps"
        # the class picker is on screen without scrolling
        assert page.evaluate("() => window.scrollY") == 0
        box = page.locator("#class_label").bounding_box()
        assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= 1000, box
        assert page.is_hidden("#model-notes")
        page.screenshot(path=str(tmp_path / "card-closed.png"))

        # the full card is one click away, and a second click folds it again
        page.click("#model-card summary")
        assert page.is_visible("#model-notes")
        assert page.text_content("#model-notes") == SHIPPED_NOTES
        facts = dict(zip(page.locator("#model-facts dt").all_text_contents(),
                         page.locator("#model-facts dd").all_text_contents()))
        assert facts["version"] == "swept@1 (latest)" and facts["classes"].startswith("T-shirt/top, Trouser")
        page.screenshot(path=str(tmp_path / "card-open.png"), full_page=True)
        page.click("#model-card summary")
        assert page.is_hidden("#model-notes")

        # the tiny default model's card has no notes: the summary line says so, with nothing interim
        page.select_option("#model", "fashion-mnist@1")
        assert page.text_content("#model-hint") == "28×28 grayscale · 10 classes"
    finally:
        page.context.close()
    check_guard(guard)


def test_phone_width_and_keyboard_only(browser, guard, service, tmp_path):
    page = new_page(browser, guard, viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True)
    try:
        open_page(page, service.url + "/")
        widths = page.evaluate("() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert widths[0] <= widths[1] == 375, f"horizontal scroll at 375 px: {widths}"
        box = page.locator("#generate").bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375, box
        page.locator("#generate").scroll_into_view_if_needed()
        assert page.locator("#generate").is_visible()

        # from the top of the page, Tab reaches Generate and Enter submits
        page.evaluate("() => document.activeElement && document.activeElement.blur()")
        for _ in range(40):
            page.keyboard.press("Tab")
            if page.evaluate("() => document.activeElement.id") == "generate":
                break
        else:
            pytest.fail("Tab never reached the Generate button")
        page.keyboard.press("Enter")
        assert wait_status(page, "succeeded", "failed", "canceled") == "succeeded"
        wait_images_loaded(page, 4)
        widths = page.evaluate("() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert widths[0] <= widths[1], f"horizontal scroll with results at 375 px: {widths}"
        page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)

        # the tabs: arrow keys move between them, aria-selected follows
        page.focus("#tab-generate")
        page.keyboard.press("ArrowRight")
        assert page.get_attribute("#tab-quality", "aria-selected") == "true"
        assert page.evaluate("() => document.activeElement.id") == "tab-quality"
        assert page.is_visible("#panel-quality") and page.is_hidden("#panel-generate")
    finally:
        page.context.close()
    check_guard(guard)


def test_quality_tab_shows_the_card_or_says_not_measured(page, service, tmp_path):
    open_page(page, service.url + "/")
    page.click("#tab-quality")
    assert page.get_attribute("#tab-quality", "aria-selected") == "true"
    page.wait_for_selector("#quality-empty")  # the tiny default model was never evaluated
    assert "not measured yet" in page.text_content("#quality-empty").lower()

    # the classifier option follows the model's link: `plain` links none
    page.click("#tab-generate")
    page.select_option("#model", "plain@1")
    assert page.eval_on_selector('#guidance option[value="classifier"]', "o => o.disabled")
    page.select_option("#model", "fashion-mnist@1")
    assert not page.eval_on_selector('#guidance option[value="classifier"]', "o => o.disabled")

    page.click("#tab-quality")
    page.select_option("#quality-model", "swept@1")
    page.wait_for_selector("svg.plot")
    plotted = [r for r in SWEEP if r["accuracy"] is not None]
    scales = page.eval_on_selector_all("svg.plot circle.point", "cs => cs.map(c => Number(c.dataset.scale))")
    assert scales == [r["guidance_scale"] for r in plotted]
    chosen = page.eval_on_selector_all("svg.plot circle.is-default", "cs => cs.map(c => Number(c.dataset.scale))")
    assert chosen == [2.0]
    rows = page.locator('table[data-table="guidance_sweep"] tbody tr')
    assert rows.count() == len(SWEEP)
    assert "3.10" in rows.nth(2).text_content() and "86.0%" in rows.nth(2).text_content()
    page.screenshot(path=str(tmp_path / "quality.png"), full_page=True)


def test_the_page_works_under_a_path_prefix(page, guard, service):
    # a proxy that serves the API under /imagegen/ and strips the prefix before passing requests on
    prefix = f"{service.url}/imagegen/"
    guard.rewrite = lambda url: service.url + "/" + url[len(prefix):] if url.startswith(prefix) else url
    open_page(page, prefix)
    page.fill("#num_images", "1")
    page.click("#generate")
    assert wait_status(page, "succeeded", "failed", "canceled") == "succeeded"
    assert wait_images_loaded(page, 1) == [28]
    assert page.eval_on_selector("#results .images img", "i => i.src").startswith(prefix + "jobs/")
    outside = [u for u in guard.seen if not u.startswith(prefix)]
    assert not outside, f"requests that left the prefix: {outside}"


def test_the_page_is_anchored_at_the_root_path():
    # behind a proxy that sets uvicorn's --root-path, the page may be reached without its trailing
    # slash: its relative URLs must still resolve under the prefix
    from fastapi.testclient import TestClient

    from service.app import create_app

    plain = TestClient(create_app()).get("/")
    assert plain.status_code == 200 and "<base" not in plain.text
    prefixed = TestClient(create_app(), root_path="/imagegen").get("/")
    assert prefixed.status_code == 200 and '<base href="/imagegen/">' in prefixed.text
    assert TestClient(create_app()).get("/static/app.js").headers["content-type"].startswith("text/javascript")
