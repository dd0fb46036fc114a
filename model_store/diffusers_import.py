"""Import a local diffusers folder into the store: a `UNet2DModel` (bare, or in a DDPM/DDIM pipeline)
or a `DiTPipeline` (DiT, AutoencoderKL and scheduler). The store's torch side.

Only JSON configs and `.safetensors` weights are read: a folder whose weights are pickles (`.bin`,
`.pt`, `.ckpt`...) is refused, never unpickled, and nothing is fetched from a hub. Every check runs
and the network is built and loaded (strictly) before anything is written, so a refused import
leaves the store as it was.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from diffusion.predictions import PREDICTION_TYPES
from model_store.cards import ModelCard, class_key
from model_store.errors import ModelStoreError
from model_store.store import ModelStore
from model_store.weights import save_model

SUPPORTED = ("a UNet2DModel folder (config.json, diffusion_pytorch_model.safetensors, and scheduler_config.json "
             "or scheduler/ beside them), or a pipeline folder with model_index.json: DDPMPipeline or DDIMPipeline "
             "(of a UNet2DModel), or DiTPipeline")
"""What `imagegen import-model` reads, for messages."""

PIPELINES = ("DDPMPipeline", "DDIMPipeline", "DiTPipeline")
"""The pipelines (model_index.json's `_class_name`) that can be imported."""

WEIGHTS = "diffusion_pytorch_model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")

BETA_SCHEDULES = {"linear": "linear", "scaled_linear": "scaled_linear", "squaredcos_cap_v2": "cosine"}
"""diffusers' `beta_schedule` -> the kind of `diffusion.schedules.ScheduleConfig`."""

DIT_NAMES = ("DiTTransformer2DModel", "Transformer2DModel")
"""How a DiT's config names its class (DiT-XL/2's folders use the old name, with norm_type ada_norm_zero)."""


class ImportRefused(ModelStoreError):
    """A folder that cannot be imported; the message is one line naming the reason."""


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ImportRefused(f"{path} is missing; importable: {SUPPORTED}") from None
    except (OSError, ValueError) as e:
        raise ImportRefused(f"{path} cannot be read as JSON ({e})") from None
    if not isinstance(data, dict):
        raise ImportRefused(f"{path} is not a JSON object")
    return data


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    """The tensors of a component folder's safetensors file; a pickle beside none is refused by name."""
    path = folder / WEIGHTS
    if not path.is_file():
        pickles = sorted(p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES) if folder.is_dir() else []
        if pickles:
            raise ImportRefused(f"{pickles[0]} holds pickle weights, which are never loaded (unpickling runs code); "
                                f"convert the folder to safetensors (save_pretrained(..., safe_serialization=True))")
        raise ImportRefused(f"no {WEIGHTS} in {folder}; importable: {SUPPORTED}")
    try:
        return safetensors.torch.load_file(str(path))
    except Exception as e:  # noqa: BLE001 - a corrupt file of any kind: say which
        raise ImportRefused(f"{path} cannot be read as safetensors ({type(e).__name__}: {e})") from None


def schedule_fields(cfg: dict[str, Any], where: str) -> dict[str, Any]:
    """The card's schedule, prediction type and x_0 clipping from a diffusers scheduler config."""
    kind = BETA_SCHEDULES.get(cfg.get("beta_schedule", "linear"))
    if kind is None:
        raise ImportRefused(f"{where}: beta_schedule {cfg['beta_schedule']!r} is not supported; supported: "
                            f"{', '.join(BETA_SCHEDULES)}")
    if cfg.get("trained_betas") is not None:
        raise ImportRefused(f"{where}: trained_betas (an explicit beta list) is not supported; supported beta "
                            f"schedules: {', '.join(BETA_SCHEDULES)}")
    for key in ("rescale_betas_zero_snr", "thresholding"):
        if cfg.get(key):
            raise ImportRefused(f"{where}: {key} = true is not supported")
    prediction = cfg.get("prediction_type", "epsilon")
    if prediction not in PREDICTION_TYPES:
        raise ImportRefused(f"{where}: prediction_type {prediction!r} is not supported; supported: "
                            f"{', '.join(PREDICTION_TYPES)}")
    clip = bool(cfg.get("clip_sample", False))
    if clip and float(cfg.get("clip_sample_range", 1.0)) != 1.0:
        raise ImportRefused(f"{where}: clip_sample_range {cfg['clip_sample_range']} is not supported (only 1.0)")
    steps = cfg.get("num_train_timesteps", 1000)
    if not isinstance(steps, int) or steps < 1:
        raise ImportRefused(f"{where}: num_train_timesteps must be a positive integer, got {steps!r}")
    schedule = {"kind": kind, "num_train_steps": steps, "beta_start": float(cfg.get("beta_start", 1e-4)),
                "beta_end": float(cfg.get("beta_end", 0.02)), "cosine_s": 0.008, "max_beta": 0.999}
    return {"schedule": schedule, "prediction_type": prediction, "clip_x0": clip}


def _scheduler_config(root: Path) -> tuple[dict[str, Any], Path]:
    for path in (root / "scheduler" / "scheduler_config.json", root / "scheduler_config.json"):
        if path.is_file():
            return _json(path), path
    raise ImportRefused(f"no scheduler config in {root} (scheduler/scheduler_config.json or scheduler_config.json)")


def _class_names(n: int, given: list[str] | None, id2label: dict[str, str] | None, where: str) -> list[str]:
    """n class names: --class-names, else the pipeline's id2label, else "0".."n-1"."""
    if given is not None:
        if len(given) != n:
            raise ImportRefused(f"--class-names has {len(given)} names, but {where} has {n} classes")
        return list(given)
    if id2label:
        names = [str(id2label.get(str(i), i)) for i in range(n)]
    else:
        names = [str(i) for i in range(n)]
    # ImageNet names a crane and a maillot twice: the index tells them apart
    keys = [class_key(c) for c in names]
    return [f"{c} ({i})" if keys.count(k) > 1 else c for i, (c, k) in enumerate(zip(names, keys))]


def _square(size: Any, where: str) -> int:
    if isinstance(size, (list, tuple)):
        if len(size) != 2 or size[0] != size[1]:
            raise ImportRefused(f"{where}: sample_size {size!r} is not square; only square images are supported")
        size = size[0]
    if not isinstance(size, int) or size < 1:
        raise ImportRefused(f"{where}: sample_size must be a positive integer, got {size!r}")
    return size


def _unet_fields(folder: Path, class_names: list[str] | None, null_class: int | None) -> tuple[dict, dict]:
    where = str(folder / "config.json")
    cfg = _json(folder / "config.json")
    if cfg.get("_class_name") != "UNet2DModel":
        raise ImportRefused(f"{where}: backbone {cfg.get('_class_name')!r} is not supported; importable: {SUPPORTED}")
    if cfg.get("class_embed_type") is not None:
        raise ImportRefused(f"{where}: class_embed_type {cfg['class_embed_type']!r} is not supported; class "
                            "labels must use num_class_embeds (an embedding table)")
    channels = cfg.get("in_channels", 3)
    if channels not in (1, 3) or cfg.get("out_channels", channels) not in (channels, 2 * channels):
        raise ImportRefused(f"{where}: in_channels {channels} / out_channels {cfg.get('out_channels')} are not "
                            "supported (1 or 3 channels in; as many out, or twice as many with learned sigma)")
    embeds = cfg.get("num_class_embeds")
    if embeds is None:
        if class_names or null_class is not None:
            raise ImportRefused(f"{where}: the UNet2DModel has no class embedding (num_class_embeds is null): it is "
                                "unconditional, and takes no --class-names or --null-class")
        k, null = 0, 0
    elif null_class is not None:
        if null_class != embeds - 1:
            raise ImportRefused(f"--null-class {null_class}: the null class must be the last of the model's "
                                f"{embeds} class embeddings ({embeds - 1}), after the classes")
        k, null = embeds - 1, null_class
    else:
        if class_names is not None and len(class_names) == embeds - 1:
            raise ImportRefused(f"--class-names has {embeds - 1} names for {embeds} class embeddings: if the last "
                                f"is the null class of classifier-free guidance, say so with --null-class {embeds - 1}")
        k, null = embeds, None
    names = _class_names(k, class_names, None, where)
    tensors = {f"unet.{key}": v for key, v in _weights(folder).items()}
    config = {key: v for key, v in cfg.items() if not key.startswith("_")}
    fields = {"architecture": {"type": "diffusers-unet2d", "config": config},
              "class_names": names, "image_size": _square(cfg.get("sample_size"), where), "channels": channels,
              "sampling": {"null_class": null} if null != k else {}}
    return fields, tensors


def _dit_fields(root: Path, index: dict[str, Any], class_names: list[str] | None,
                null_class: int | None) -> tuple[dict, dict]:
    tcfg, vcfg = _json(root / "transformer" / "config.json"), _json(root / "vae" / "config.json")
    where = str(root / "transformer" / "config.json")
    if tcfg.get("_class_name") not in DIT_NAMES or tcfg.get("norm_type", "ada_norm_zero") != "ada_norm_zero":
        raise ImportRefused(f"{where}: transformer {tcfg.get('_class_name')!r} is not a DiT; supported: "
                            "DiTTransformer2DModel (norm_type ada_norm_zero)")
    if vcfg.get("_class_name") != "AutoencoderKL":
        raise ImportRefused(f"{root / 'vae' / 'config.json'}: VAE {vcfg.get('_class_name')!r} is not supported; "
                            "supported: AutoencoderKL")
    tensors = {f"transformer.{k}": v for k, v in _weights(root / "transformer").items()}
    tensors.update({f"vae.{k}": v for k, v in _weights(root / "vae").items()})
    table = [v for k, v in tensors.items() if k.endswith("class_embedder.embedding_table.weight")]
    num_embeds = int(tcfg.get("num_embeds_ada_norm") or 0)
    if not table or num_embeds < 1:
        raise ImportRefused(f"{where}: the DiT has no class embedding (num_embeds_ada_norm)")
    # the table has a row past the classes when the DiT was trained with label dropout: that is the null class
    has_null = table[0].shape[0] > num_embeds
    if null_class is not None and (not has_null or null_class != num_embeds):
        raise ImportRefused(f"--null-class {null_class}: this DiT's null class is "
                            f"{num_embeds if has_null else 'absent'} (its own, as DiTPipeline uses it)")
    names = _class_names(num_embeds, class_names, index.get("id2label"), where)
    latent_c, latent_size = tcfg.get("in_channels", 4), _square(tcfg.get("sample_size"), where)
    if tcfg.get("out_channels", latent_c) not in (latent_c, 2 * latent_c):
        raise ImportRefused(f"{where}: out_channels {tcfg.get('out_channels')} is neither in_channels nor twice it")
    channels = vcfg.get("out_channels", 3)
    if channels != 3 or vcfg.get("latent_channels", 4) != latent_c:
        raise ImportRefused(f"{root / 'vae'}: the VAE must decode to RGB from the DiT's {latent_c} latent channels")
    size = latent_size * 2 ** (len(vcfg.get("block_out_channels", [64])) - 1)
    config = {"transformer": {k: v for k, v in tcfg.items() if not k.startswith("_")},
              "vae": {k: v for k, v in vcfg.items() if not k.startswith("_")},
              "scaling_factor": float(vcfg.get("scaling_factor", 0.18215)),
              "latent_shape": [latent_c, latent_size, latent_size]}
    fields = {"architecture": {"type": "diffusers-dit", "config": config}, "class_names": names,
              "image_size": size, "channels": 3, "sampling": {} if has_null else {"null_class": None}}
    return fields, tensors


def read_folder(path: Path | str, class_names: list[str] | None = None,
                null_class: int | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The card fields and the tensors of a diffusers folder; ImportRefused if it cannot be served."""
    root = Path(path)
    if not root.is_dir():
        raise ImportRefused(f"{root} is not a folder; importable: {SUPPORTED}")
    if (root / "model_index.json").is_file():
        index = _json(root / "model_index.json")
        pipeline = index.get("_class_name")
        if pipeline not in PIPELINES:
            raise ImportRefused(f"{root / 'model_index.json'}: pipeline {pipeline!r} is not supported; importable: "
                                f"{SUPPORTED}")
        if pipeline == "DiTPipeline":
            fields, tensors = _dit_fields(root, index, class_names, null_class)
        else:
            fields, tensors = _unet_fields(root / "unet", class_names, null_class)
    else:
        fields, tensors = _unet_fields(root, class_names, null_class)
    scheduler, where = _scheduler_config(root)
    sched = schedule_fields(scheduler, str(where))
    if fields["architecture"]["type"] == "diffusers-dit":
        sched["clip_x0"] = False  # latents are not bounded; DiTPipeline never clips them
    sampling = {**fields.pop("sampling"), **({"clip_x0": True} if sched["clip_x0"] else {})}
    has_null = sampling.get("null_class", len(fields["class_names"])) is not None
    steps = sched["schedule"]["num_train_steps"]
    fields.update({
        "kind": "generator", "schedule": sched["schedule"], "prediction_type": sched["prediction_type"],
        "sampling": sampling,
        # CFG where there is a null class (DiTPipeline's default scale is 4); plain conditional otherwise
        "defaults": {"sampler": "ddim", "steps": min(50, steps), "guidance": "cfg",
                     "guidance_scale": 4.0 if has_null else 1.0},
        "training": {"source": "diffusers", "folder": root.name, "pipeline": _pipeline_name(root),
                     "scheduler": scheduler.get("_class_name"),
                     "diffusers_version": scheduler.get("_diffusers_version")},
    })
    return fields, tensors


def _pipeline_name(root: Path) -> str | None:
    index = root / "model_index.json"
    return _json(index).get("_class_name") if index.is_file() else None


def _check_loads(fields: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """Build the network the card describes and load the tensors into it strictly, before writing."""
    from model_store.loading import build_module

    card = ModelCard.from_dict({**fields, "name": "import-check", "version": 1, "dtype": "float32", "sha256": "",
                                "created_at": ""})
    try:
        module = build_module(card)
    except ImportError as e:
        raise ImportRefused(str(e)) from None
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise ImportRefused(f"the weights do not fit the config ({first})") from None


def import_folder(store: ModelStore, path: Path | str, name: str, *, version: int | None = None,
                  class_names: list[str] | None = None, null_class: int | None = None) -> ModelCard:
    """Import the diffusers folder at `path` as the next version of `name` (which must be `version`
    when given); returns the stored card. Nothing is written when it is refused."""
    from model_store.store import check_name

    check_name(name)
    if version is not None:
        existing = [c.version for c in store.list() if c.name == name]
        expected = max(existing, default=0) + 1
        if version != expected:
            raise ImportRefused(f"--version {version}: the next version of {name!r} is {expected}")
    fields, tensors = read_folder(path, class_names, null_class)
    _check_loads(fields, tensors)
    fields["notes"] = f"Imported from the diffusers folder {Path(path).name} by `imagegen import-model`."
    return save_model(store, name, tensors, fields)
