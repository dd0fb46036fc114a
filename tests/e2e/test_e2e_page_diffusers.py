"""The playground with imported diffusers models (a real browser against the real service): a DiT of
1,000 classes gets a searchable class picker and makes RGB images decoded by its VAE; as a latent
model it offers img2img but no mask, which the API would refuse."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from test_e2e_page import (  # noqa: F401
    browser,
    check_guard,
    guard,
    job_document,
    new_page,
    open_page,
    wait_images_loaded,
    wait_status,
)
from test_e2e_page_img2img import picture, upload

pytest.importorskip("diffusers")

from diffusers_folders import save_dit_folder  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def tiny_store_root(tiny_store_root, tmp_path_factory) -> Path:
    """The session's tiny store (copied) plus `dit`: a tiny DiTPipeline with ImageNet-style names."""
    from model_store import ModelStore
    from model_store.diffusers_import import import_folder

    root = tmp_path_factory.mktemp("diffusers-page-store")
    shutil.copytree(tiny_store_root, root, dirs_exist_ok=True)
    folder = save_dit_folder(tmp_path_factory.mktemp("dit") / "dit")
    index = json.loads((folder / "model_index.json").read_text())
    index["id2label"] = {str(i): f"class {i}" for i in range(1000)} | {"207": "golden retriever",
                                                                       "1": "goldfish, Carassius auratus"}
    (folder / "model_index.json").write_text(json.dumps(index))
    import_folder(ModelStore(root), folder, "dit")
    return root


def test_a_thousand_class_latent_model_has_a_searchable_picker_and_makes_rgb_images(browser, guard, service,
                                                                                    tmp_path):
    page = new_page(browser, guard)
    try:
        open_page(page, service.url + "/")
        assert page.is_hidden("#class-search")  # ten classes need no search
        page.select_option("#model", label=page.eval_on_selector(
            "#model", "s => [...s.options].find(o => o.textContent.includes('dit')).textContent"))
        page.wait_for_selector("#class-search", state="visible")
        assert page.locator("#class_label option").count() == 1001  # the classes and "none"
        page.fill("#class-search", "gold")
        page.wait_for_function("() => document.querySelectorAll('#class_label option').length === 3")
        assert page.locator("#class_label option").all_text_contents() == ["goldfish, Carassius auratus",
                                                                           "golden retriever",
                                                                           "none (unconditional)"]
        page.select_option("#class_label", label="golden retriever")
        page.fill("#num_images", "2")
        page.fill("#steps", "3")
        page.click("#generate")
        status = wait_status(page, "succeeded", "failed", "canceled")
        assert status == "succeeded", f"{page.text_content('#status')}\n{service.processes.report()}"
        assert wait_images_loaded(page, 2) == [16] * 2
        assert "latent" in page.text_content("#model-hint")
        screenshot = tmp_path / "dit-playground.png"
        page.screenshot(path=str(screenshot), full_page=True)
        shutil.copy(screenshot, Path("/tmp/dit-playground.png"))
        assert Image.open(screenshot).size[0] == 1280
    finally:
        page.context.close()
    check_guard(guard)


PAINT_TOOLS = ("#mask-canvas", "#mask-label", "#mask-hint", "#brush", "#mask-clear", "#mask-invert")


def select_model(page, text: str) -> None:
    page.select_option("#model", label=page.eval_on_selector(
        "#model", "(s, text) => [...s.options].find(o => o.textContent.includes(text)).textContent", text))


def test_a_latent_model_takes_a_picture_for_img2img_but_offers_no_mask(browser, guard, service, tmp_path):
    page = new_page(browser, guard)
    sent = []
    page.on("request", lambda r: sent.append(r.post_data_json) if r.url.endswith("/generate") else None)
    try:
        open_page(page, service.url + "/")
        upload(page, picture(tmp_path / "wide.png"))
        # the pixel model of the page inpaints: its paint tools are there
        assert all(page.is_visible(tool) for tool in PAINT_TOOLS) and page.is_hidden("#mask-off")

        select_model(page, "dit")
        page.wait_for_selector("#mask-off", state="visible")
        assert "latent" in page.text_content("#mask-off") and "img2img only" in page.text_content("#mask-off")
        assert all(page.is_hidden(tool) for tool in PAINT_TOOLS), [page.is_hidden(t) for t in PAINT_TOOLS]
        assert "no inpainting" in page.text_content("#image-legend")
        # the picture is still there, redrawn at the DiT's size in color, with its strength and Remove
        assert "16×16 color" in page.text_content("#image-note")
        assert page.is_visible("#strength") and page.is_visible("#image-remove")
        assert page.is_hidden("#resample-field")

        page.select_option("#class_label", label="golden retriever")
        page.fill("#num_images", "1")
        page.fill("#steps", "3")
        page.click("#generate")
        status = wait_status(page, "succeeded", "failed", "canceled")
        assert status == "succeeded", f"{page.text_content('#status')}\n{service.processes.report()}"
        assert wait_images_loaded(page, 1) == [16]
        assert "init_image" in sent[-1] and "mask" not in sent[-1], sorted(sent[-1])
        r = job_document(service, page.get_attribute("#job", "data-job"))["request"]
        assert r["init_image"].startswith("sha256:") and r["mask"] is None and r["strength"] == 0.75

        # back on a pixel model, the mask can be painted again
        select_model(page, "fashion-mnist")
        page.wait_for_selector("#mask-canvas", state="visible")
        assert page.is_hidden("#mask-off") and "inpainting" in page.text_content("#image-legend")
    finally:
        page.context.close()
    check_guard(guard)
