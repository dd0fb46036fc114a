"""The driver loop's per-step decisions, made on host arrays, against the per-image rules they replaced
(a Python loop over each image's spec and lists): the same indices every step, the same moves after
it, through a batch that mixes everything and that images join and leave."""

import torch
from models import IMAGE_SHAPE, NUM_CLASSES, an_input, perturbed_model

from diffusion.guidance import GuidedDenoiser
from diffusion.sampling import SAMPLER_STEPS, SamplerState, SampleSpec, _indices, advance
from diffusion.schedules import CLEAN


class LinearClassifier(torch.nn.Module):
    def forward(self, x, t):
        return x.flatten(1)[:, :NUM_CLASSES] * 0.1 + t.view(-1, 1) / 1000


def per_image_decisions(state: SamplerState) -> dict[str, list[int]]:
    """What the loop sends to the device for one step, worked out image by image from the specs."""
    rows = [i for i, d in enumerate(state.done) if not d]
    specs, ts = [state.specs[i] for i in rows], state.timesteps
    index, stage, repeat = state.index.tolist(), state.stage.tolist(), state.repeat.tolist()
    groups = {name: [k for k, i in enumerate(rows) if state.specs[i].sampler == name] for name in SAMPLER_STEPS}
    t_cur = [ts[i][index[i]] for i in rows]
    t_next = [ts[i][index[i] + 1] for i in rows]
    # the rule of which predictions a row needs: a null class or CFG at 0 the unconditional alone, CFG
    # at 1 and classifier guidance the conditional alone, any other CFG both
    is_null = [sp.class_label is None or (sp.guidance == "cfg" and sp.guidance_scale == 0) for sp in specs]
    need_u = [n or (sp.guidance == "cfg" and sp.guidance_scale != 1) for n, sp in zip(is_null, specs)]
    return {
        "rows": rows, "t_cur": t_cur, "t_next": t_next,
        "t_prev": [ts[i][max(index[i] - 1, 0)] for i in rows],
        "t_eval": [tn if stage[i] == 1 else tc for i, tc, tn in zip(rows, t_cur, t_next)],
        "rows_c": [k for k, n in enumerate(is_null) if not n], "rows_u": [k for k, u in enumerate(need_u) if u],
        "both": [k for k, (n, u) in enumerate(zip(is_null, need_u)) if u and not n],
        "classifier_rows": [k for k, sp in enumerate(specs) if sp.guidance == "classifier"],
        **{f"group_{name}": g for name, g in groups.items()},
        "heun_pred": [k for k in groups["heun"] if stage[rows[k]] == 0],
        "heun_corr": [k for k in groups["heun"] if stage[rows[k]] == 1],
        "ddim_noisy": [p for p, k in enumerate(groups["ddim"]) if specs[k].eta > 0],
        "not_ddpm": [int(sp.sampler != "ddpm") for sp in specs],
        "dpmpp_first": [int(index[rows[k]] == 0 or repeat[rows[k]] > 0) for k in groups["dpmpp_2m"]],
    }


def per_image_moves(state: SamplerState, decisions: dict[str, list[int]]) -> tuple[list, list, list]:
    """(index, stage, repeat) of every image after the step that `decisions` describes."""
    index, stage, repeat = state.index.tolist(), state.stage.tolist(), state.repeat.tolist()
    for i, tn in zip(decisions["rows"], decisions["t_next"]):
        spec = state.specs[i]
        if spec.sampler == "heun" and stage[i] == 0 and tn != CLEAN:
            stage[i] = 1  # the corrector is still to come
        elif state.inpaint[i] and tn != CLEAN and repeat[i] + 1 < spec.resample_steps:
            stage[i], repeat[i] = 0, repeat[i] + 1  # RePaint: take the step again
        else:
            stage[i], repeat[i], index[i] = 0, 0, index[i] + 1
    return index, stage, repeat


def a_mixed_job(first_seed: int, with_inputs: bool) -> tuple[list[SampleSpec], dict]:
    guidance = [(3, 3.0, "cfg"), (None, 1.0, "cfg"), (5, 0.0, "cfg"), (2, 1.0, "cfg"), (7, 2.0, "classifier")]
    specs, inits, masks, left = [], [], [], torch.zeros((1, *IMAGE_SHAPE[1:]))
    left[..., :14] = 1
    for i, sampler in enumerate(SAMPLER_STEPS):
        for j, (label, scale, kind) in enumerate(guidance):
            n = len(specs)
            masked = with_inputs and n % 3 == 0
            strength = (1.0, 0.5, 0.0, 0.8)[n % 4] if with_inputs else 1.0
            specs.append(SampleSpec(label, scale, kind, sampler, steps=(5, 2, 8, 1)[(i + j) % 4],
                                    eta=0.6 if sampler == "ddim" and j % 2 else 0.0, seed=first_seed + n,
                                    strength=strength, resample_steps=1 + (n // 3) % 3 if masked else 1))
            inits.append(an_input() if masked or strength < 1 else None)
            masks.append(left if masked else None)
    return specs, {"init_images": inits, "masks": masks}


def test_every_step_decides_what_the_per_image_rules_decide(linear_schedule):
    schedule = linear_schedule
    denoiser = GuidedDenoiser(perturbed_model(schedule).exact, NUM_CLASSES, classifier=LinearClassifier())
    jobs = [a_mixed_job(100 * k, with_inputs=k % 2 == 1) for k in range(4)]
    state = SamplerState.start(jobs[0][0], IMAGE_SHAPE, NUM_CLASSES, schedule, **jobs[0][1])
    joined, steps, reused = 1, 0, 0
    while len(state) or joined < len(jobs):
        if joined < len(jobs) and steps % 2 == 0:
            specs, inputs = jobs[joined]
            new = SamplerState.start(specs, IMAGE_SHAPE, NUM_CLASSES, schedule, track_x0=joined % 2 == 0, **inputs)
            state, joined = SamplerState.concat([state, new]), joined + 1
        expected = per_image_decisions(state)
        moving = state.moving()
        if moving is not None:
            sent = {**{name: v.tolist() for name, v in moving.ix.items()},
                    **{name: v.tolist() for name, v in _indices(state, moving).items()}}
            assert sent == expected, steps
        moves = per_image_moves(state, expected)
        advance(state, denoiser, schedule)
        assert (state.index.tolist(), state.stage.tolist(), state.repeat.tolist()) == moves, steps
        # the moving set's indices are built once while no image finishes
        if moving is not None and not (state.index == state.table.last)[moving.rows].any():
            assert state.moving() is moving
            reused += 1
        steps += 1
        # the finished images leave, as the worker's do (every other step)
        if steps % 2:
            state = state.select([i for i, d in enumerate(state.done) if not d])
    assert steps > 10 and reused > 3


def test_a_selection_keeps_each_images_subsequence(linear_schedule):
    specs, inputs = a_mixed_job(0, with_inputs=True)
    state = SamplerState.start(specs, IMAGE_SHAPE, NUM_CLASSES, linear_schedule, **inputs)
    other = SamplerState.start([SampleSpec(1, steps=1000, seed=9)], IMAGE_SHAPE, NUM_CLASSES, linear_schedule)
    both = SamplerState.concat([state, other])
    rows = [len(specs), 3, 0, 7]
    picked = both.select(rows)
    assert picked.timesteps == [both.timesteps[r] for r in rows]
    assert picked.table.timesteps.shape[0] <= len(rows)  # only the subsequences still used are kept
    assert [picked.progress(i) for i in range(len(rows))] == [both.progress(r) for r in rows]
