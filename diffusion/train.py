"""Training for the eps-model and the noise-aware guidance classifier, in visible phases:
setup, data, model, optimizer, loop (with sample grids and checkpoints), result."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from diffusion.classifier import CLASSIFIER_PRESETS, NoiseClassifier
from diffusion.data import ImageDataset, load_dataset
from diffusion.ema import EMA
from diffusion.eval_classifier import EVAL_CLASSIFIER_PRESETS, EvalClassifier
from diffusion.images import save_grid
from diffusion.losses import clean_classifier_loss, eps_loss, noisy_classifier_loss
from diffusion.sampling import SampleSpec, sample
from diffusion.schedules import NoiseSchedule, ScheduleConfig
from diffusion.unet import UNET_PRESETS, UNet

TASKS = ("generator", "guidance-classifier", "eval-classifier")

ARCHITECTURES = {
    "generator": (UNET_PRESETS, UNet),
    "guidance-classifier": (CLASSIFIER_PRESETS, NoiseClassifier),
    "eval-classifier": (EVAL_CLASSIFIER_PRESETS, EvalClassifier),
}
"""Each task's presets and network class."""


def _f(default, help: str, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    task: str = _f("generator", "what to train: the eps-model ('generator'), the noise-aware 'guidance-classifier', "
                   "or the clean-image 'eval-classifier' that scores samples", choices=TASKS)
    data: str = _f("fashion-mnist", "'fashion-mnist' (train split) or a folder with one subfolder of images per class")
    preset: str = _f("fmnist", "architecture preset of the task's network (see ARCHITECTURES)")
    schedule: str = _f("linear", "noise schedule over T = 1000 steps", choices=("linear", "cosine"))
    steps: int = _f(20_000, "optimizer steps")
    batch_size: int = _f(128, "images per optimizer step")
    lr: float = _f(2e-4, "AdamW peak learning rate")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    warmup_steps: int = _f(500, "linear learning-rate warm-up steps")
    lr_decay: str = _f("cosine", "learning-rate decay after warm-up", choices=("cosine", "constant"))
    grad_clip: float = _f(1.0, "clip the gradient norm to this (0 = off)")
    p_uncond: float = _f(0.1, "generator: probability of dropping the label to the null class (CFG)")
    ema_decay: float = _f(0.9999, "EMA decay of the served weights")
    seed: int = _f(0, "seed of initialization, batches, timesteps and noise")
    device: str = _f("auto", "'auto' (cuda if available), 'cpu' or 'cuda'")
    compile: bool = _f(True, "torch.compile the network (CUDA only)")
    bf16: bool = _f(True, "bf16 autocast (CUDA only)")
    limit: int = _f(0, "use only the first N training images (0 = all); for smoke tests")
    image_size: int = _f(28, "image side the data is resized to")
    channels: int = _f(1, "image channels (1 grayscale, 3 RGB)")
    sample_every: int = _f(2000, "generator: save a sample grid (one row per class) every N steps (0 = never)")
    sample_steps: int = _f(25, "generator: DDIM steps (CFG scale 3) of those sample grids")
    checkpoint_every: int = _f(2000, "save a resumable checkpoint every N steps (0 = only at the end)")
    log_every: int = _f(50, "update the progress bar's loss every N steps")
    run_dir: str = _f("runs/train", "where checkpoints, grids and the log go")
    max_minutes: float = _f(0.0, "stop (with a checkpoint) after this many minutes of training (0 = no limit)")
    init_from: str = _f("", "start from these weights instead of a random init (model and EMA both; a fresh "
                            "optimizer and warm-up): a label, such as a store ref, for weights passed as init_state")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    config: TrainConfig
    model: torch.nn.Module  # the EMA network on the CPU, fp32
    model_config: dict  # the architecture config, for the card
    class_names: list[str]
    steps_done: int
    seconds: float  # training time of this run and the runs it resumed, excluding start-up
    final_loss: float  # mean loss over the last log window
    final_accuracy: float | None  # classifiers: accuracy on (noised or augmented) training batches
    device: str


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _lr_at(cfg: TrainConfig, step: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_decay == "constant":
        return cfg.lr
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _last_log_entry(path: Path) -> dict:
    lines = path.read_text().splitlines() if path.exists() else []
    return json.loads(lines[-1]) if lines else {}


def train(cfg: TrainConfig, dataset: ImageDataset | None = None,
          on_log: Callable[[int, dict], None] | None = None,
          init_state: dict[str, torch.Tensor] | None = None) -> TrainResult:
    """Train from scratch (or from `init_state`, the weights `cfg.init_from` names), or resume from
    `run_dir/checkpoint.pt` when one exists for the same config."""
    # --- setup -------------------------------------------------------------------------------------
    if cfg.task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {cfg.task!r}")
    if bool(cfg.init_from) != (init_state is not None):
        raise ValueError("init_from names the weights passed as init_state: give both or neither")
    device = resolve_device(cfg.device)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    on_cuda = device.type == "cuda"
    if on_cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # --- data --------------------------------------------------------------------------------------
    if dataset is None:
        dataset = load_dataset(cfg.data, cfg.image_size, cfg.channels)
    if cfg.limit:
        dataset = dataset.subset(n=min(cfg.limit, len(dataset)))
    images = dataset.images.to(device)  # uint8: Fashion-MNIST is 47 MB, so it all lives on the device
    labels = dataset.labels.to(device)
    num_classes = dataset.num_classes
    schedule = NoiseSchedule(ScheduleConfig(cfg.schedule))

    # --- model -------------------------------------------------------------------------------------
    presets, network = ARCHITECTURES[cfg.task]
    base = presets[cfg.preset]
    model_cfg = type(base)(**{**base.to_dict(), "image_size": dataset.image_size,
                              "in_channels": dataset.channels, "num_classes": num_classes})
    model = network(model_cfg)
    if init_state is not None:
        try:
            model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in init_state.items()})
        except RuntimeError as e:
            raise ValueError(f"init_from {cfg.init_from}: its weights do not fit preset {cfg.preset!r}: {e}") from None
    model.to(device).train()
    ema = EMA(model, cfg.ema_decay)
    forward = torch.compile(model) if (cfg.compile and on_cuda) else model

    # --- optimizer ---------------------------------------------------------------------------------
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, seconds = 0, 0.0
    ckpt_path = run_dir / "checkpoint.pt"
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        saved = json.loads(ckpt["config"])
        # what may change between a run and its resumption: how long it goes on, where, and its reporting
        free = ("steps", "max_minutes", "device", "sample_every", "sample_steps", "checkpoint_every", "log_every")
        if any(saved.get(k) != v for k, v in cfg.to_dict().items() if k not in free):
            raise ValueError(f"{ckpt_path} was made with another config; use another --run-dir or remove it")
        model.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        opt.load_state_dict(ckpt["optimizer"])
        step, seconds = ckpt["step"], ckpt["seconds"]
        gen.set_state(ckpt["generator"].to(gen.get_state().device) if on_cuda else ckpt["generator"])

    def checkpoint() -> None:
        _save_atomic({"model": model.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
                      "step": step, "seconds": seconds, "generator": gen.get_state().cpu(),
                      "config": json.dumps(cfg.to_dict())}, ckpt_path)

    def sample_grid() -> None:
        per_class = 8
        specs = [SampleSpec(c, 3.0, sampler="ddim", steps=cfg.sample_steps, seed=1000 * c + i)
                 for c in range(num_classes) for i in range(per_class)]
        x = sample(ema.model, schedule, specs, (dataset.channels, dataset.image_size, dataset.image_size),
                   num_classes, device=device, clip_x0=True)
        save_grid(x.cpu(), run_dir / f"samples_{step:07d}.png", nrow=per_class)

    # --- loop --------------------------------------------------------------------------------------
    log_path = run_dir / "log.jsonl"
    last = _last_log_entry(log_path) if step else {}
    log = open(log_path, "a")
    perm, pos = torch.randperm(len(images), device=device, generator=gen), 0
    # a resumed run that has no steps left still reports the figures its log ended with
    window_loss, window_acc, window_n = 0.0, 0.0, 0
    last_loss, last_acc = last.get("loss", float("nan")), last.get("accuracy")
    bar = tqdm(total=cfg.steps, initial=step, desc=cfg.task, unit="step", dynamic_ncols=True)
    t_start = time.perf_counter() - seconds
    while step < cfg.steps:
        if pos + cfg.batch_size > len(perm):
            perm, pos = torch.randperm(len(images), device=device, generator=gen), 0
        idx = perm[pos:pos + cfg.batch_size]
        pos += cfg.batch_size
        x0 = images[idx].float() / 127.5 - 1
        y = labels[idx]
        for group in opt.param_groups:
            group["lr"] = _lr_at(cfg, step)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16 and on_cuda):
            if cfg.task == "generator":
                loss, acc = eps_loss(forward, schedule, x0, y, num_classes, cfg.p_uncond, gen), None
            elif cfg.task == "guidance-classifier":
                loss, acc = noisy_classifier_loss(forward, schedule, x0, y, gen)
            else:
                loss, acc = clean_classifier_loss(forward, x0, y, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        ema.update(model)
        step += 1
        window_n += 1
        window_loss += loss.detach()
        if acc is not None:
            window_acc += acc.detach()
        if step % cfg.log_every == 0 or step == cfg.steps:
            seconds = time.perf_counter() - t_start
            last_loss = float(window_loss) / window_n
            last_acc = float(window_acc) / window_n if acc is not None else None
            entry = {"step": step, "loss": last_loss, "lr": _lr_at(cfg, step - 1), "seconds": round(seconds, 2),
                     "images_per_s": round(step * cfg.batch_size / max(seconds, 1e-9), 1)}
            if last_acc is not None:
                entry["accuracy"] = last_acc
            log.write(json.dumps(entry) + "\n")
            log.flush()
            bar.set_postfix(loss=f"{last_loss:.4f}", **({"acc": f"{last_acc:.3f}"} if last_acc is not None else {}),
                            img_s=entry["images_per_s"])
            if on_log:
                on_log(step, entry)
            window_loss, window_acc, window_n = 0.0, 0.0, 0
        bar.update(1)
        if cfg.task == "generator" and cfg.sample_every and step % cfg.sample_every == 0:
            sample_grid()
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
            seconds = time.perf_counter() - t_start
            checkpoint()
        if cfg.max_minutes and time.perf_counter() - t_start > 60 * cfg.max_minutes:
            break
    bar.close()
    log.close()
    seconds = time.perf_counter() - t_start
    checkpoint()

    # --- result ------------------------------------------------------------------------------------
    return TrainResult(
        config=cfg, model=ema.model.float().cpu(), model_config=model_cfg.to_dict(),
        class_names=list(dataset.class_names), steps_done=step, seconds=seconds, final_loss=last_loss,
        final_accuracy=last_acc, device=torch.cuda.get_device_name(device) if on_cuda else "cpu",
    )


def config_fields() -> list:
    """The TrainConfig fields, for command lines that expose each as a flag."""
    return list(fields(TrainConfig))
