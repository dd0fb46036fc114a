"""Hand-written bad input for POST /generate and the job routes: each answer is a 4xx problem document
naming what is wrong, never a 5xx. (The fuzzed counterpart is test_api_schemathesis.py.)"""

from __future__ import annotations

import json

import pytest
from api_helpers import assert_problem

JSON = {"Content-Type": "application/json"}


def post(client, body: bytes):
    return client.post("/generate", content=body, headers=JSON)


def field_message(problem: dict, field: str) -> str:
    return {e["field"]: e["message"] for e in problem["errors"]}[field]


def test_a_10_mb_body_is_413(client):
    body = b'{"class_label": 1, "model": "' + b"a" * (10 * 1024 * 1024) + b'"}'
    assert assert_problem(post(client, body), 413)["type"].endswith("/body-too-large")


@pytest.mark.parametrize("body, why", [
    (b'{"class_label": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
    (b'{"class_label": 1, "extra": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_000 + b"}", "nested too deeply"),
    (b"[" * 200_000, "nested too deeply"),
    (b'{"class_label": 1, "seed": 1' + b"0" * 5000 + b"}", "too many digits"),
    (b'{"class_label": "\xff\xfe"}', "not UTF-8"),
], ids=["nested-list-field", "nested-object", "nested-top-level", "5000-digit-int", "not-utf8"])
def test_bodies_the_parser_cannot_read_are_422_saying_why(client, body, why):
    problem = assert_problem(post(client, body), 422)
    assert why in field_message(problem, "body")


def test_nesting_the_parser_can_read_is_refused_by_field(client):
    problem = assert_problem(post(client, b'{"class_label": ' + b"[" * 500 + b"]" * 500 + b"}"), 422)
    assert field_message(problem, "class_label").startswith("must be a class index, a class name or null")
    assert len(problem["detail"]) < 2000  # the value is not echoed back in full


@pytest.mark.parametrize("field, literal, message", [
    ("guidance_scale", "NaN", "finite"), ("guidance_scale", "Infinity", "finite"),
    ("guidance_scale", "-Infinity", ""), ("eta", "NaN", "between 0 and 1"), ("eta", "Infinity", "between 0 and 1"),
    ("seed", "1e400", "must be an integer"), ("seed", "NaN", "must be an integer"),
    ("steps", "Infinity", "must be an integer"), ("num_images", "-Infinity", "must be an integer"),
])
def test_nan_and_infinity_are_422(client, field, literal, message):
    problem = assert_problem(post(client, f'{{"class_label": 1, "{field}": {literal}}}'.encode()), 422)
    assert message in field_message(problem, field)


@pytest.mark.parametrize("seed, num_images", [(2**63, 1), (2**64, 1), (10**30, 1), (-1, 1), (2**63 - 1, 4)])
def test_a_seed_out_of_range_is_422(client, seed, num_images):
    problem = assert_problem(client.post("/generate", json={"class_label": 1, "seed": seed, "num_images": num_images}),
                             422)
    assert "2**63-1" in field_message(problem, "seed")


def test_the_largest_seed_is_accepted(client):
    r = client.post("/generate", json={"class_label": 1, "seed": 2**63 - 1, "num_images": 1})
    assert r.status_code == 202 and r.json()["request"]["seed"] == 2**63 - 1


@pytest.mark.parametrize("label", ["ｓｎｅａｋｅｒ", "👟", "\u0000", "\ud800", "Ｔ-shirt/top", "Sneaker\u200b",
                                   "x" * 100_000, "", " "])
def test_unicode_class_names_that_match_nothing_are_422(client, label):
    body = json.dumps({"class_label": label}).encode()
    problem = assert_problem(post(client, body), 422)
    assert "unknown class" in field_message(problem, "class_label")
    assert len(problem["detail"]) < 200_000


def test_class_names_match_case_insensitively_across_unicode_case(client):
    for label in ("SNEAKER", "sneaker", "ſneaker"):  # the long s case-folds to s
        r = client.post("/generate", json={"class_label": label})
        assert r.status_code == 202 and r.json()["request"]["class_label"] == 7, label


@pytest.mark.parametrize("model", ["../../etc", "../fashion-mnist", "fashion-mnist/../../etc", "/etc/passwd",
                                   "fashion-mnist@../../1", "..", ".", "fashion-mnist\u0000", "%2e%2e%2fetc",
                                   "C:\\Windows", "~root", "fmnist-classifier/../fashion-mnist", "a" * 10_000])
def test_a_path_traversal_in_model_is_422_and_names_no_directory(client, tiny_store_root, model):
    problem = assert_problem(client.post("/generate", json={"class_label": 1, "model": model}), 422)
    assert field_message(problem, "model").startswith("unknown model")
    assert str(tiny_store_root) not in str(problem)


@pytest.mark.parametrize("path", ["/jobs/..%2F..%2Fetc%2Fpasswd", "/jobs/%00", "/jobs/" + "a" * 5000,
                                  "/jobs/x/images/99999999999999999999999999.png", "/jobs/x/images/-1.png",
                                  "/models/..%2F..%2Fetc", "/static/..%2F..%2Fservice%2Fsettings.py"])
def test_odd_paths_are_404_problems(client, path):
    assert_problem(client.get(path), 404)


@pytest.mark.parametrize("body", [b"", b"null", b"[]", b'"text"', b"{", b'{"class_label": 1,}', b"\x00"])
def test_bodies_that_are_no_json_object_are_422(client, body):
    assert_problem(post(client, body), 422)
