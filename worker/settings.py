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
        "", description="comma-separated model refs (name or name@version) to load; empty: every generator in the "
                        "store")
    max_batch_images: int = Field(
        64, ge=1, description="most images in flight at once; a larger job runs alone when the worker is idle")
    worker_accel: bool = Field(
        True, description="on CUDA: bf16 autocast, channels_last and CUDA graphs per batch-size bucket, captured at "
                          "start (false: the models as they are, fp32); no effect on the CPU")
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
