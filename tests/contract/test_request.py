"""The request is declared once (`contract.request.GenerateSettings`): the sampler, the API's schema,
both CLI commands, the job record and the Python client all follow that one declaration."""

from __future__ import annotations

import argparse
import inspect
import json
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from contract.errors import InvalidField
from contract.request import (
    API,
    CLI,
    FLAGS,
    SETTINGS,
    GenerateSettings,
    Limits,
    problem,
    request_defaults,
    resolve_settings,
)
from contract.schema import GenerateRequest, NormalizedRequest
from diffusion.sampling import SampleSpec
from imagegen import generate, submit_cmd
from imagegen.client import AsyncClient, Client
from model_store import ModelStore

REPO = Path(__file__).resolve().parents[2]
OPTIONS = ("model", "webhook_url", "init_image", "mask", "resize")
"""Request fields that are not settings: which model, where to post, and the image inputs."""


@pytest.fixture(scope="module")
def card(tiny_store_root):
    return ModelStore(tiny_store_root).resolve("fashion-mnist")


def test_the_sampled_settings_are_the_sampler_s_spec():
    assert {name for name, s in SETTINGS.items() if s.sampled} == {f.name for f in fields(SampleSpec)}


def test_the_api_schema_has_every_setting_and_option():
    assert set(GenerateRequest.model_fields) == {*SETTINGS, *OPTIONS}
    assert set(NormalizedRequest.model_fields) == {*SETTINGS, "init_image", "mask"}
    schema = GenerateRequest.model_json_schema()["properties"]
    assert schema["steps"]["minimum"] == 1 and schema["steps"]["maximum"] == 1000
    assert "default: the model card's, else 50" in schema["steps"]["description"]
    assert schema["sampler"]["anyOf"][0]["enum"] == ["ddpm", "ddim", "dpmpp_2m", "euler", "heun"]


def _flags(add_arguments) -> set[str]:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return {a.option_strings[0] for a in parser._actions if a.option_strings}


def test_both_commands_take_a_flag_per_setting():
    local = {FLAGS[name] for name, s in SETTINGS.items() if s.local}
    assert local <= _flags(generate.add_arguments)
    assert "--previews" not in _flags(generate.add_arguments)  # previews exist only in the service
    assert {FLAGS[name] for name in SETTINGS} <= _flags(submit_cmd.add_arguments)


@pytest.mark.parametrize("client", [Client.generate, AsyncClient.generate])
def test_the_python_client_takes_every_field(client):
    params = inspect.signature(client).parameters
    assert {*SETTINGS, *OPTIONS} <= set(params), {*SETTINGS, *OPTIONS} - set(params)


def test_the_record_round_trip_gives_the_same_settings(card):
    s = resolve_settings(card, vocab=API, class_label="sneaker", steps=7, sampler="heun", seed=3, previews=True)
    record = json.loads(json.dumps(s.to_record()))  # as Redis stores it
    back = GenerateSettings.from_record(record)
    assert back.to_record() == s.to_record()
    assert SampleSpec(**back.sampled()) == SampleSpec(class_label=7, guidance_scale=2.0, sampler="heun", steps=7,
                                                      seed=3)


def test_a_record_without_a_required_field_is_refused_and_an_optional_one_defaults(card):
    record = resolve_settings(card, class_label=1, seed=0).to_record()
    with pytest.raises(ValueError, match="no 'seed' field"):
        GenerateSettings.from_record({k: v for k, v in record.items() if k != "seed"})
    lean = GenerateSettings.from_record({k: v for k, v in record.items() if k not in ("strength", "previews")})
    assert (lean.strength, lean.previews) == (1.0, False)


def test_defaults_come_from_the_request_then_the_card_then_the_declaration(card):
    s = resolve_settings(card, class_label=None, seed=5)
    assert (s.sampler, s.steps, s.guidance_scale) == ("ddim", 4, 2.0)  # the test card's defaults
    assert (s.num_images, s.guidance, s.eta, s.strength, s.resample_steps) == (4, "cfg", 0.0, 1.0, 1)
    assert resolve_settings(card, class_label=None, steps=9).steps == 9
    assert request_defaults(card) == {"sampler": "ddim", "steps": 4, "guidance": "cfg", "guidance_scale": 2.0,
                                      "eta": 0.0, "num_images": 4}


def test_messages_name_the_field_or_the_flag(card):
    assert problem("steps", 0) == "must be between 1 and 1000 (got 0)"
    assert problem("steps", 1001, Limits(max_steps=500)) == "must be between 1 and 500 (got 1001)"
    assert problem("num_images", 100, Limits(max_images=128)) is None  # the deployment's ceiling, not 64
    assert problem("seed", -1) == "must be between 0 and 2**63-1 (got -1)"
    assert problem("guidance_scale", float("inf")) == "must be a finite number >= 0 (got inf)"
    assert problem("eta", 2) == "must be between 0 and 1 (got 2)"
    assert problem("previews", "yes") == "must be true or false (got 'yes')"
    with pytest.raises(InvalidField) as api:
        resolve_settings(card, vocab=API, class_label=1, steps=0, sampler="plms")
    assert str(api.value) == ("sampler must be one of ddpm, ddim, dpmpp_2m, euler, heun (got 'plms'); "
                              "steps must be between 1 and 1000 (got 0)")
    with pytest.raises(InvalidField) as cli:
        resolve_settings(card, vocab=CLI, class_label=1, steps=0)
    assert str(cli.value) == "--steps must be between 1 and 1000 (got 0)"


def test_classifier_guidance_needs_the_linked_classifier_installed(card, tiny_store_root, tmp_path):
    shutil.copytree(tiny_store_root, tmp_path / "store")
    store = ModelStore(tmp_path / "store")
    assert resolve_settings(card, class_label=1, guidance="classifier", store=store).guidance == "classifier"
    shutil.rmtree(store.root / card.links["guidance_classifier"].partition("@")[0])
    with pytest.raises(InvalidField, match="is not installed; use --guidance cfg") as e:
        resolve_settings(card, class_label=1, guidance="classifier", store=store)
    assert e.value.field == "guidance"


def test_the_contract_imports_no_torch():
    code = ("import sys, contract.request, contract.schema, contract.jobs, contract.results, contract.settings, "
            "contract.image_inputs, contract.models, contract.webhooks; "
            "leaked = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'diffusion', 'diffusers')); "
            "assert not leaked, leaked")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
