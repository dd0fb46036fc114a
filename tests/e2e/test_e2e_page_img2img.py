"""The playground's Image section in a real browser against the real service (see test_e2e_page.py):
upload a picture through the file input, paint a mask, generate with live previews.

The page scales the picture itself (center crop, the model's size and channels) and sends a PNG the
API takes as it is: the job has no notes, and its kept region equals what the page showed.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from test_e2e_page import (  # noqa: F401
    JOB_S,
    UI_MS,
    browser,
    check_guard,
    guard,
    job_document,
    new_page,
    open_page,
    page,
    wait_images_loaded,
    wait_status,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SIZE = 28

# Records, in page time, when the first preview was shown and when the first result image was put in
# the page: a MutationObserver sees every change of the DOM, however short-lived.
WATCH = """() => {
  window.__seen = { preview: null, previews: 0, previewSrc: null, images: null };
  new MutationObserver((records) => {
    const t = performance.now();
    for (const r of records) {
      if (r.type === "attributes" && r.target.id === "preview-img") {
        const src = r.target.getAttribute("src");
        if (src) {
          window.__seen.previews += 1;
          if (window.__seen.preview === null) { window.__seen.preview = t; window.__seen.previewSrc = src; }
        }
      }
    }
    if (window.__seen.images === null && document.querySelector("#results .images img")) window.__seen.images = t;
  }).observe(document.body, { subtree: true, childList: true, attributes: true, attributeFilter: ["src"] });
}"""


def picture(path: Path, size: tuple[int, int] = (56, 40)) -> Path:
    """A color picture, wider than high, with structure everywhere."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([(x * 4) % 256, (y * 6) % 256, ((x + y) * 3) % 256], axis=-1).astype(np.uint8)
    Image.fromarray(rgb, "RGB").save(path)
    return path


def canvas_gray(page) -> np.ndarray:
    """The picture as the page shows (and sends) it: the image canvas's red channel (gray: r = g = b)."""
    data = page.evaluate("""() => { const c = document.getElementById('image-canvas');
        return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data); }""")
    return np.array(data, dtype=np.uint8).reshape(SIZE, SIZE, 4)[..., 0]


def paint(page, x0: float, y0: float, x1: float, y1: float) -> None:
    """A mouse stroke over the mask canvas, in fractions of its width and height."""
    canvas = page.locator("#mask-canvas")
    canvas.scroll_into_view_if_needed()  # the mouse only reaches what is in the viewport
    box = canvas.bounding_box()
    at = lambda fx, fy: (box["x"] + fx * box["width"], box["y"] + fy * box["height"])  # noqa: E731
    page.mouse.move(*at(x0, y0))
    page.mouse.down()
    page.mouse.move(*at(x1, y1), steps=12)
    page.mouse.up()


def upload(page, path: Path) -> None:
    page.set_input_files("#init_image", str(path))
    page.wait_for_selector("#image-tools", state="visible")


def test_img2img_with_a_mask_shows_previews_before_the_images(page, service, tmp_path):
    open_page(page, service.url + "/")
    assert page.is_checked("#previews")  # on by default in the page
    assert page.is_hidden("#image-tools") and page.is_hidden("#strength")

    upload(page, picture(tmp_path / "wide.png"))
    note = page.text_content("#image-note")
    assert "center-cropped from 56×40" in note and "scaled from 40×40" in note and "28×28 grayscale" in note, note
    assert page.is_visible("#strength") and page.text_content("#strength-value") == "0.75"
    assert page.is_hidden("#resample-field")  # no mask yet: img2img
    shown = canvas_gray(page)
    assert shown.std() > 10  # the picture is there, not a flat canvas

    # one vertical stroke down the right part: the left half stays kept
    paint(page, 0.78, 0.05, 0.78, 0.95)
    page.wait_for_selector("#resample-field", state="visible")
    assert "Inpainting" in page.text_content("#mask-state")

    page.select_option("#class_label", label="Bag")
    page.fill("#steps", "80")
    page.fill("#num_images", "2")
    page.fill("#seed", "99")
    page.evaluate(WATCH)
    page.click("#generate")
    status = wait_status(page, "succeeded", "failed", "canceled", timeout_s=JOB_S)
    assert status == "succeeded", f"{page.text_content('#status')}\n{service.processes.report()}"
    assert wait_images_loaded(page, 2) == [SIZE] * 2

    seen = page.evaluate("() => window.__seen")
    assert seen["preview"] is not None, f"no preview was shown: {seen}"
    assert seen["images"] is not None and seen["preview"] < seen["images"], seen
    assert page.is_hidden("#preview")  # the final images replaced it
    # a preview is a grid like grid.png: two 28 px tiles in a row, 2 px of padding around each
    src = seen["previewSrc"]
    assert src.startswith("data:image/png;base64,")
    grid = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
    assert grid.size == (2 + 2 * 30, 2 + 30), grid.size

    doc = job_document(service, page.get_attribute("#job", "data-job"))
    r = doc["request"]
    assert r["init_image"].startswith("sha256:") and r["mask"].startswith("sha256:")
    assert (r["strength"], r["resample_steps"], r["previews"], r["steps"]) == (0.75, 1, True, 80)
    assert doc["notes"] == []  # the page sent the model's size and channels: nothing to convert
    assert page.is_hidden("#notes")

    # the kept (left) half of each image is the picture the page showed
    for image in doc["images"]:
        png = httpx.get(f"{service.url}{image['url']}", timeout=30)
        out = np.asarray(Image.open(io.BytesIO(png.content))).astype(int)
        assert out.shape == (SIZE, SIZE)
        assert np.abs(out[:, : SIZE // 2] - shown[:, : SIZE // 2].astype(int)).max() <= 1
    assert "inpainting, strength 0.75" in page.text_content("#results .results-head p")


def test_mask_tools_and_an_api_error_next_to_an_image_field(page, service, tmp_path):
    open_page(page, service.url + "/")
    # not a picture: the page says so under the file input, and sends nothing
    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    page.set_input_files("#init_image", str(bad))
    page.wait_for_selector("#init_image-error:not(:empty)")
    assert "not an image" in page.text_content("#init_image-error")
    assert page.is_hidden("#image-tools")

    upload(page, picture(tmp_path / "square.png", (28, 28)))
    assert "28×28 grayscale" in page.text_content("#image-note") and "scaled" not in page.text_content("#image-note")
    paint(page, 0.1, 0.5, 0.9, 0.5)
    page.wait_for_selector("#resample-field", state="visible")
    page.click("#mask-clear")
    page.wait_for_selector("#resample-field", state="hidden")
    page.click("#mask-invert")  # nothing painted, inverted: everything is regenerated
    page.wait_for_selector("#resample-field", state="visible")

    # a value the API refuses comes back next to its field, as for the other fields
    page.fill("#resample_steps", "11")
    page.fill("#num_images", "1")
    page.click("#generate")
    error = page.locator("#resample_steps-error")
    error.wait_for(state="visible")
    assert error.text_content() == "must be between 1 and 10 (got 11)"
    assert page.get_attribute("#resample_steps", "aria-invalid") == "true"
    assert page.evaluate("() => document.activeElement.id") == "resample_steps"

    # Remove picture: back to plain generation, which now runs
    page.fill("#resample_steps", "1")
    page.click("#image-remove")
    assert page.is_hidden("#image-tools")
    page.fill("#steps", "2")
    page.click("#generate")
    assert wait_status(page, "succeeded", "failed", "canceled") == "succeeded"
    assert page.text_content("#resample_steps-error") == ""
    doc = job_document(service, page.get_attribute("#job", "data-job"))
    assert doc["request"]["init_image"] is None and doc["request"]["mask"] is None


def test_image_section_at_phone_width_with_the_keyboard(browser, guard, service, tmp_path):
    page = new_page(browser, guard, viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True)
    try:
        open_page(page, service.url + "/")
        upload(page, picture(tmp_path / "tall.png", (40, 90)))
        assert "center-cropped from 40×90" in page.text_content("#image-note")
        widths = page.evaluate("() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert widths[0] <= widths[1] == 375, f"horizontal scroll at 375 px with a picture: {widths}"
        page.locator("#mask-canvas").scroll_into_view_if_needed()
        box = page.locator("#mask-canvas").bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 375 and box["width"] >= 200, box

        # the mask canvas takes the keyboard: Shift+arrows paint, and the brush shows where
        page.focus("#mask-canvas")
        assert page.is_visible("#brush-cursor")
        for _ in range(6):
            page.keyboard.press("Shift+ArrowRight")
        page.wait_for_selector("#resample-field", state="visible")
        # a finger paints too (touch-action none: it does not scroll the page)
        page.click("#mask-clear")
        page.wait_for_selector("#resample-field", state="hidden")
        page.locator("#mask-canvas").tap(position={"x": box["width"] / 2, "y": box["height"] / 2})
        page.wait_for_selector("#resample-field", state="visible")
        # every control of the section has a label
        unlabeled = page.evaluate("""() => [...document.querySelectorAll('.image-section input')]
            .filter(i => !i.labels.length && !i.getAttribute('aria-label')).map(i => i.id)""")
        assert unlabeled == []
        page.screenshot(path=str(tmp_path / "phone-image.png"), full_page=True)
    finally:
        page.context.close()
    check_guard(guard)
