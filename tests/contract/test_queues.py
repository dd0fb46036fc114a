"""The queue of each model (contract.queues): one name, from QUEUE_NAME and the model's ref, that the
API, the worker, the recovery and the deployment all use."""

from __future__ import annotations

import pytest

from contract.queues import is_ref, model_queue, queue_model, store_queues
from model_store import ModelStore


def test_a_model_queue_is_queue_name_colon_ref_and_reads_back():
    assert model_queue("imagegen", "fashion-mnist@2") == "imagegen:fashion-mnist@2"
    assert queue_model("imagegen", "imagegen:fashion-mnist@2") == "fashion-mnist@2"
    assert queue_model("renders", model_queue("renders", "my.model_v-2@10")) == "my.model_v-2@10"


@pytest.mark.parametrize("ref", ["fashion-mnist", "fashion-mnist@", "@2", "fashion-mnist@latest", "a:b@1", ""])
def test_only_a_full_ref_names_a_queue(ref):
    # a bare name means the newest version at submit: the API resolves it first, so a queue never
    # stands for "whatever is newest"
    assert not is_ref(ref)
    with pytest.raises(ValueError, match="name@version"):
        model_queue("imagegen", ref)


@pytest.mark.parametrize("queue", ["imagegen", "imagegen-staging:fashion-mnist@2", "imagegen:fashion-mnist",
                                   "other:fashion-mnist@2", "imagegen:"])
def test_other_queues_are_no_model_queue_of_this_deployment(queue):
    assert queue_model("imagegen", queue) is None


def test_every_generator_version_of_the_store_has_a_queue(tiny_store_root):
    assert store_queues("imagegen", ModelStore(tiny_store_root)) == {
        "fashion-mnist@1": "imagegen:fashion-mnist@1", "plain@1": "imagegen:plain@1"}  # no classifier's
