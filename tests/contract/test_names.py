"""The contract's vocabulary is what the math implements: `diffusion` cannot import the contract
(it is the layer below), so it keeps its own tables, and these tests keep the two equal."""

from __future__ import annotations

from contract import names
from diffusion import conditioning, guidance, noise, sampling, schedules


def test_the_sampler_names_are_the_samplers_the_math_steps():
    assert list(names.SAMPLERS) == list(sampling.SAMPLER_STEPS)
    assert all(names.SAMPLERS[name].strip() for name in names.SAMPLERS)


def test_the_guidance_kinds_are_the_math_s():
    assert tuple(names.GUIDANCE_KINDS) == guidance.GUIDANCE_KINDS


def test_the_ranges_are_the_math_s():
    assert names.MAX_SEED == noise.MAX_SEED
    assert names.MAX_RESAMPLE_STEPS == conditioning.MAX_RESAMPLE_STEPS
    assert names.NUM_TRAIN_STEPS == names.MAX_STEPS == schedules.NUM_TRAIN_STEPS
