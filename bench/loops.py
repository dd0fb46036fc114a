"""The two reference loops of benchmark 1, written around our U-Net as their users would write them.

- `peer_loop`: what a user of Hugging Face diffusers writes: `DDIMScheduler`, `set_timesteps`, per step
  one forward pass on the doubled batch `cat([x, x])` with labels `cat([y, null])`, the CFG combination,
  `scheduler.step`; eager fp32.
- `seed_loop`: the per-step Python loop of the DDPM notebook in ../shared/seeds/ (000_*.txt: `extract`,
  `p_sample`, `p_sample_loop`), kept as the notebook writes it (gathers on the CPU, a device round trip
  per lookup, every intermediate image kept), eager fp32, with the same CFG combination. The notebook
  walks every one of its training steps; here its schedule is respaced to the same trailing timesteps
  as the other loops (betas re-derived from alpha_bar at those steps, the model called with the
  original timestep, as guided-diffusion's respacing does), so that all three loops make the same
  number of model evaluations.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

DIFFUSERS_BETA_SCHEDULES = {"linear": "linear", "cosine": "squaredcos_cap_v2"}


def diffusers_ddim(schedule_cfg: dict[str, Any], clip_x0: bool) -> Any:
    """The `DDIMScheduler` that matches our DDIM (tests/diffusion/test_cross_check_diffusers.py): trailing
    spacing, alpha_bar = 1 at the end, and with x_0 clipping its clip_sample (and, at each step,
    use_clipped_model_output)."""
    import diffusers

    return diffusers.DDIMScheduler(
        num_train_timesteps=int(schedule_cfg.get("num_train_steps", 1000)),
        beta_schedule=DIFFUSERS_BETA_SCHEDULES[schedule_cfg.get("kind", "linear")],
        beta_start=float(schedule_cfg.get("beta_start", 1e-4)), beta_end=float(schedule_cfg.get("beta_end", 0.02)),
        clip_sample=clip_x0, clip_sample_range=1.0, set_alpha_to_one=True, steps_offset=0,
        timestep_spacing="trailing", prediction_type="epsilon")


@torch.no_grad()
def peer_loop(model: nn.Module, scheduler: Any, x_T: torch.Tensor, y: torch.Tensor, null_class: int,
              guidance_scale: float, steps: int) -> torch.Tensor:
    """diffusers-style DDIM with classifier-free guidance from `x_T`; returns x_0 on the CPU."""
    clip = bool(scheduler.config.clip_sample)
    scheduler.set_timesteps(steps)
    x = x_T
    labels = torch.cat([y, torch.full_like(y, null_class)])
    for t in scheduler.timesteps:
        eps = model(torch.cat([x, x]), t.to(x.device).expand(2 * x.shape[0]), labels)
        eps_c, eps_u = eps.chunk(2)
        eps = eps_u + guidance_scale * (eps_c - eps_u)
        x = scheduler.step(eps, t, x, eta=0.0, use_clipped_model_output=clip).prev_sample
    return x.cpu()


# --- the seed notebook's loop ----------------------------------------------------------------------

class SeedSchedule:
    """The notebook's precomputed tables (its cell 3 and cell 16), from betas respaced to `timesteps`."""

    def __init__(self, alphas_cumprod_full: torch.Tensor, timesteps: list[int]):
        # ascending, so that index i is the notebook's time index (0 = the last step taken)
        self.timestep_map = torch.tensor(sorted(timesteps), dtype=torch.long)
        ab = alphas_cumprod_full.double()[self.timestep_map]
        ab_prev = F.pad(ab[:-1], (1, 0), value=1.0)
        betas = (1 - ab / ab_prev).float()
        self.timesteps = len(timesteps)
        # from here on as the notebook computes them
        self.betas = betas
        alphas = 1. - betas
        alphas_cumprod = torch.cumprod(alphas, axis=0)
        self.sqrt_one_minus_alphas_cumprod = torch.sqrt(1. - alphas_cumprod)
        self.sqrt_recip_alphas = torch.sqrt(1.0 / alphas)
        alphas_cumprod_prev = F.pad(alphas_cumprod[:-1], (1, 0), value=1.0)
        self.posterior_variance = betas * (1. - alphas_cumprod_prev) / (1. - alphas_cumprod)


def extract(a: torch.Tensor, t: torch.Tensor, x_shape: torch.Size) -> torch.Tensor:
    """The notebook's `extract`: a gather on the CPU, moved back to t's device."""
    batch_size = t.shape[0]
    out = a.gather(-1, t.cpu())
    return out.reshape(batch_size, *((1,) * (len(x_shape) - 1))).to(t.device)


class GuidedSeedModel:
    """`model(x, t)` of the notebook: one forward pass on the doubled batch, the CFG combination, and the
    respaced index t mapped to the timestep the network was trained with."""

    def __init__(self, model: nn.Module, sched: SeedSchedule, y: torch.Tensor, null_class: int, guidance_scale: float):
        self.model, self.scale = model, guidance_scale
        self.labels = torch.cat([y, torch.full_like(y, null_class)])
        self.timestep_map = sched.timestep_map.to(y.device)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ts = self.timestep_map[t]
        eps = self.model(torch.cat([x, x]), torch.cat([ts, ts]), self.labels)
        eps_c, eps_u = eps.chunk(2)
        return eps_u + self.scale * (eps_c - eps_u)


@torch.no_grad()
def p_sample(model: GuidedSeedModel, sched: SeedSchedule, x: torch.Tensor, t: torch.Tensor,
             t_index: int) -> torch.Tensor:
    """The notebook's `p_sample` (DDPM ancestral step, Ho et al. 2020, Alg. 2)."""
    betas_t = extract(sched.betas, t, x.shape)
    sqrt_one_minus_alphas_cumprod_t = extract(sched.sqrt_one_minus_alphas_cumprod, t, x.shape)
    sqrt_recip_alphas_t = extract(sched.sqrt_recip_alphas, t, x.shape)
    model_mean = sqrt_recip_alphas_t * (x - betas_t * model(x, t) / sqrt_one_minus_alphas_cumprod_t)
    if t_index == 0:
        return model_mean
    posterior_variance_t = extract(sched.posterior_variance, t, x.shape)
    noise = torch.randn_like(x)
    return model_mean + torch.sqrt(posterior_variance_t) * noise


@torch.no_grad()
def seed_loop(model: nn.Module, alphas_cumprod: torch.Tensor, timesteps: list[int], shape: tuple[int, ...],
              y: torch.Tensor, null_class: int, guidance_scale: float) -> torch.Tensor:
    """The notebook's `p_sample_loop` (its tqdm bar left out) with CFG; returns x_0 on the CPU."""
    device = next(model.parameters()).device
    sched = SeedSchedule(alphas_cumprod, timesteps)
    guided = GuidedSeedModel(model, sched, y, null_class, guidance_scale)
    img = torch.randn(shape, device=device)
    imgs = []
    for i in reversed(range(0, sched.timesteps)):
        img = p_sample(guided, sched, img, torch.full((shape[0],), i, device=device, dtype=torch.long), i)
        imgs.append(img)
    return imgs[-1].cpu()
