"""Settings only the worker reads, from the environment. The ones it shares with the API (REDIS_URL,
QUEUE_NAME, RESULT_TTL, JOB_TIMEOUT, WEBHOOK_*...) live in `contract.settings.Settings`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    worker_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="where the models run; auto picks cuda when torch sees a GPU")
    # a plain string: pydantic-settings would parse a list-typed field as JSON, not "a,b"
    worker_models: str = Field(
        "", description="comma-separated model refs (name or name@version) this worker may serve (it listens to "
                        "their queues); empty: every generator in the store")
    worker_model_budget_mb: float = Field(
        0, ge=0, description="MiB of device memory the loaded models may take (weights plus the engine's reserve, "
                             "see worker.pool); models then load on demand and the least recently used idle ones "
                             "are evicted; 0: no limit, every model loaded at start")
    max_batch_images: int = Field(
        64, ge=1, description="most images in flight at once; a larger job runs alone when the worker is idle")
    worker_accel: bool = Field(
        True, description="the fast path of the worker's device: on CUDA bf16 autocast, channels_last and CUDA "
                          "graphs per batch-size bucket, captured at start; on the CPU the backend of "
                          "WORKER_CPU_BACKEND (false: the models as they are, eager fp32, on either device)")
    worker_cpu_backend: Literal["onnxruntime", "eager"] = Field(
        "onnxruntime", description="how the models run on the CPU: exported to ONNX at load (cached in "
                                   "WORKER_CACHE_DIR) and run by ONNX Runtime, fp32; or eager torch")
    worker_cpu_threads: int = Field(
        0, ge=0, description="threads ONNX Runtime runs a forward pass on; 0: as many as torch uses (the cores)")
    worker_cache_dir: str | None = Field(
        None, description="where the CPU backend keeps its ONNX exports (default: $XDG_CACHE_HOME/imagegen/onnx or "
                          "~/.cache/imagegen/onnx); unwritable: exported in memory at every start")
    worker_name: str | None = Field(None, description="RQ worker name (default: hostname.pid); unique per Redis")
    worker_shutdown_grace: float = Field(
        30.0, ge=0, description="seconds after SIGTERM to finish running jobs; the rest go back to the queue")
    max_attempts: int = Field(
        3, ge=1, description="times a job may be started by workers that then die (SIGKILL, out of memory) before "
                             "it fails with code worker_died; 1 = never run again after a worker death")

    @property
    def models(self) -> list[str]:
        """WORKER_MODELS as a list; empty means every generator in the store."""
        return [m.strip() for m in self.worker_models.split(",") if m.strip()]
