"""Training for the eps-model and the noise-aware guidance classifier, in visible phases:
setup, data, model, optimizer, loop (with sample grids and checkpoints), result."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

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


@dataclass
class _Run:
    """What a run carries from step to step, and what its checkpoint keeps."""

    cfg: TrainConfig
    model: torch.nn.Module
    ema: EMA
    opt: torch.optim.Optimizer
    gen: torch.Generator  # batches, timesteps and noise
    step: int = 0
    seconds: float = 0.0  # training time so far, this run's and the runs it resumed

    def save(self, path: Path) -> None:
        _save_atomic({"model": self.model.state_dict(), "ema": self.ema.state_dict(),
                      "optimizer": self.opt.state_dict(), "step": self.step, "seconds": self.seconds,
                      "generator": self.gen.get_state().cpu(), "config": json.dumps(self.cfg.to_dict())}, path)

    def resume(self, path: Path, device: torch.device) -> None:
        """Continue from the checkpoint at `path`, which must come from the same config (but for how
        long it goes on, where, and its reporting)."""
        ckpt = torch.load(path, map_location=device, weights_only=True)
        saved = json.loads(ckpt["config"])
        free = ("steps", "max_minutes", "device", "sample_every", "sample_steps", "checkpoint_every", "log_every")
        if any(saved.get(k) != v for k, v in self.cfg.to_dict().items() if k not in free):
            raise ValueError(f"{path} was made with another config; use another --run-dir or remove it")
        self.model.load_state_dict(ckpt["model"])
        self.ema.load_state_dict(ckpt["ema"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.step, self.seconds = ckpt["step"], ckpt["seconds"]
        state = ckpt["generator"]
        self.gen.set_state(state.to(self.gen.get_state().device) if device.type == "cuda" else state)


def _prepare_device(cfg: TrainConfig) -> tuple[torch.device, torch.Generator]:
    """The device, seeded: the global RNG (initialization) and the run's generator."""
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device, gen


def _build_model(cfg: TrainConfig, dataset: ImageDataset, init_state: dict[str, torch.Tensor] | None):
    """The task's network for `dataset`'s images and classes (from `init_state` if given), and its config."""
    presets, network = ARCHITECTURES[cfg.task]
    base = presets[cfg.preset]
    model_cfg = type(base)(**{**base.to_dict(), "image_size": dataset.image_size,
                              "in_channels": dataset.channels, "num_classes": dataset.num_classes})
    model = network(model_cfg)
    if init_state is not None:
        try:
            model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in init_state.items()})
        except RuntimeError as e:
            raise ValueError(f"init_from {cfg.init_from}: its weights do not fit preset {cfg.preset!r}: {e}") from None
    return model, model_cfg


def _loss(cfg: TrainConfig, forward: torch.nn.Module, schedule: NoiseSchedule, x0: torch.Tensor, y: torch.Tensor,
          num_classes: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The task's loss on one batch, and the classifiers' accuracy on it (None for the generator)."""
    if cfg.task == "generator":
        return eps_loss(forward, schedule, x0, y, num_classes, cfg.p_uncond, gen), None
    if cfg.task == "guidance-classifier":
        return noisy_classifier_loss(forward, schedule, x0, y, gen)
    return clean_classifier_loss(forward, x0, y, gen)


class _Log:
    """The loss (and accuracy) averaged over each window of `log_every` steps, written to log.jsonl
    and shown on the progress bar."""

    def __init__(self, cfg: TrainConfig, path: Path, bar: tqdm, on_log: Callable[[int, dict], None] | None,
                 resumed: bool) -> None:
        self.cfg, self.bar, self.on_log = cfg, bar, on_log
        # a resumed run that has no steps left still reports the figures its log ended with
        last = _last_log_entry(path) if resumed else {}
        self.loss, self.accuracy = last.get("loss", float("nan")), last.get("accuracy")
        self.file = open(path, "a")  # closed by close(), after the loop
        self._reset()

    def _reset(self) -> None:
        self.window_loss, self.window_acc, self.window_n = 0.0, 0.0, 0

    def add(self, loss: torch.Tensor, acc: torch.Tensor | None) -> None:
        # detached device tensors: summed without a sync until the window is written
        self.window_n += 1
        self.window_loss += loss.detach()
        if acc is not None:
            self.window_acc += acc.detach()

    def write(self, step: int, seconds: float, has_accuracy: bool) -> None:
        self.loss = float(self.window_loss) / self.window_n
        self.accuracy = float(self.window_acc) / self.window_n if has_accuracy else None
        entry = {"step": step, "loss": self.loss, "lr": _lr_at(self.cfg, step - 1), "seconds": round(seconds, 2),
                 "images_per_s": round(step * self.cfg.batch_size / max(seconds, 1e-9), 1)}
        if self.accuracy is not None:
            entry["accuracy"] = self.accuracy
        self.file.write(json.dumps(entry) + "\n")
        self.file.flush()
        self.bar.set_postfix(loss=f"{self.loss:.4f}",
                             **({"acc": f"{self.accuracy:.3f}"} if self.accuracy is not None else {}),
                             img_s=entry["images_per_s"])
        if self.on_log:
            self.on_log(step, entry)
        self._reset()

    def close(self) -> None:
        self.file.close()


def _sample_grid(cfg: TrainConfig, model: torch.nn.Module, schedule: NoiseSchedule, dataset: ImageDataset,
                 device: torch.device, path: Path) -> None:
    """Eight samples per class, one row each (DDIM, CFG scale 3), of the EMA weights."""
    per_class = 8
    specs = [SampleSpec(c, 3.0, sampler="ddim", steps=cfg.sample_steps, seed=1000 * c + i)
             for c in range(dataset.num_classes) for i in range(per_class)]
    x = sample(model, schedule, specs, (dataset.channels, dataset.image_size, dataset.image_size),
               dataset.num_classes, device=device, clip_x0=True)
    save_grid(x.cpu(), path, nrow=per_class)


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
    device, gen = _prepare_device(cfg)
    on_cuda = device.type == "cuda"
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    # --- data --------------------------------------------------------------------------------------
    if dataset is None:
        dataset = load_dataset(cfg.data, cfg.image_size, cfg.channels)
    if cfg.limit:
        dataset = dataset.subset(n=min(cfg.limit, len(dataset)))
    images = dataset.images.to(device)  # uint8: Fashion-MNIST is 47 MB, so it all lives on the device
    labels = dataset.labels.to(device)
    schedule = NoiseSchedule(ScheduleConfig(cfg.schedule))

    # --- model and optimizer -----------------------------------------------------------------------
    model, model_cfg = _build_model(cfg, dataset, init_state)
    model.to(device).train()
    ema = EMA(model, cfg.ema_decay)
    forward = torch.compile(model) if (cfg.compile and on_cuda) else model
    run = _Run(cfg, model, ema, torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay), gen)
    ckpt_path = run_dir / "checkpoint.pt"
    if ckpt_path.exists():
        run.resume(ckpt_path, device)

    # --- loop --------------------------------------------------------------------------------------
    bar = tqdm(total=cfg.steps, initial=run.step, desc=cfg.task, unit="step", dynamic_ncols=True)
    log = _Log(cfg, run_dir / "log.jsonl", bar, on_log, resumed=run.step > 0)
    perm, pos = torch.randperm(len(images), device=device, generator=gen), 0
    t_start = time.perf_counter() - run.seconds
    while run.step < cfg.steps:
        if pos + cfg.batch_size > len(perm):
            perm, pos = torch.randperm(len(images), device=device, generator=gen), 0
        idx = perm[pos:pos + cfg.batch_size]
        pos += cfg.batch_size
        for group in run.opt.param_groups:
            group["lr"] = _lr_at(cfg, run.step)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16 and on_cuda):
            loss, acc = _loss(cfg, forward, schedule, images[idx].float() / 127.5 - 1, labels[idx],
                              dataset.num_classes, gen)
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        run.opt.step()
        ema.update(model)
        run.step += 1
        log.add(loss, acc)
        if run.step % cfg.log_every == 0 or run.step == cfg.steps:
            log.write(run.step, time.perf_counter() - t_start, acc is not None)
        bar.update(1)
        if cfg.task == "generator" and cfg.sample_every and run.step % cfg.sample_every == 0:
            _sample_grid(cfg, ema.model, schedule, dataset, device, run_dir / f"samples_{run.step:07d}.png")
        if cfg.checkpoint_every and run.step % cfg.checkpoint_every == 0:
            run.seconds = time.perf_counter() - t_start
            run.save(ckpt_path)
        if cfg.max_minutes and time.perf_counter() - t_start > 60 * cfg.max_minutes:
            break
    bar.close()
    log.close()
    run.seconds = time.perf_counter() - t_start
    run.save(ckpt_path)

    # --- result ------------------------------------------------------------------------------------
    return TrainResult(
        config=cfg, model=ema.model.float().cpu(), model_config=model_cfg.to_dict(),
        class_names=list(dataset.class_names), steps_done=run.step, seconds=run.seconds, final_loss=log.loss,
        final_accuracy=log.accuracy, device=torch.cuda.get_device_name(device) if on_cuda else "cpu",
    )


def config_fields() -> list:
    """The TrainConfig fields, for command lines that expose each as a flag."""
    return list(fields(TrainConfig))
