"""The API's vocabulary of the math: sampler and guidance names with their descriptions, and the
ranges a request may ask for. Torch-free, for the API, the CLI and the worker alike.

The math core (`diffusion`) implements these and is below every other layer, so it cannot import
this module: it keeps its own tables (`diffusion.sampling.SAMPLER_STEPS`, `diffusion.guidance.
GUIDANCE_KINDS`, `diffusion.noise.MAX_SEED`...), and tests/contract/test_names.py keeps the two in
step.
"""

NUM_TRAIN_STEPS = 1000
"""T: the number of training (noising) steps of the models this service trains."""

SAMPLERS: dict[str, str] = {
    "ddpm": "DDPM ancestral sampling with the posterior variance (Ho et al. 2020, Alg. 2, respaced).",
    "ddim": "DDIM (Song et al. 2021, eq. 12); eta 0 is deterministic, eta 1 matches DDPM's variance.",
    "dpmpp_2m": "DPM-Solver++(2M) multistep ODE solver (Lu et al. 2022), first order on the last step.",
    "euler": "Euler on the probability-flow ODE in sigma space (Karras et al. 2022); equals DDIM eta 0.",
    "heun": "Heun's 2nd-order method on the probability-flow ODE (Karras et al. 2022, Alg. 1); "
    "two model evaluations per step but the last.",
}
"""Every sampler the core implements, with a one-line description."""

GUIDANCE_KINDS: dict[str, str] = {
    "cfg": "classifier-free guidance: eps = eps_uncond + s * (eps_cond - eps_uncond)",
    "classifier": "classifier guidance (ADM): the conditional model shifted by s * grad log p(y | x_t)",
}
"""Every guidance method, with a one-line description."""

MIN_STEPS, MAX_STEPS = 1, NUM_TRAIN_STEPS
"""Sampler step counts allowed: any number from 1 to T."""

MAX_SEED = 2**63 - 1
"""Largest seed: seeds are 0..2**63-1 (the API's range; torch generators take 64-bit seeds)."""

MAX_RESAMPLE_STEPS = 10
"""Most RePaint resampling repetitions per inpainting step (the API's `resample_steps` range is 1..this)."""
