"""The playground with imported diffusers models (a real browser against the real service): a DiT of
1,000 classes gets a searchable class picker and makes RGB images decoded by its VAE."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from test_e2e_page import browser, check_guard, guard, new_page, open_page, wait_images_loaded, wait_status  # noqa: F401

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
