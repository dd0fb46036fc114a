"""Every setting of the API and the workers, read from the environment in one place."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    # the API and every worker default to the same local server; `imagegen up` starts a private one
    # instead when REDIS_URL is not set in its environment
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="redis:// or rediss:// URL of the queue and result store")
    queue_name: str = Field("imagegen", description="RQ queue the API enqueues generation jobs on")
    result_ttl: int = Field(86_400, ge=60, description="seconds a finished job and its PNGs are kept")
    max_images_per_job: int = Field(64, ge=1, description="most images one request may ask for")
    max_steps: int = Field(1000, ge=1, le=1000, description="most sampler steps one request may ask for")
    default_model: str | None = Field(None, description="model used when a request names none (default: fashion-mnist, else the only generator)")
    model_store: str | None = Field(None, description="model store root (default: the repository's model_store/models)")
    webhook_secret: str = Field("", description="HMAC-SHA256 key for webhook signatures (X-Signature)")
    webhook_timeout: float = Field(5.0, gt=0, description="seconds one webhook POST may take")
    webhook_max_attempts: int = Field(5, ge=1, description="webhook deliveries tried before giving up")
    job_timeout: int = Field(600, ge=1, description="seconds a job may run before it fails")
    worker_heartbeat_ttl: int = Field(30, ge=5, description="a worker silent for this long counts as dead")
    log_level: str = Field("info", description="log level of the API and the workers")


@lru_cache
def get_settings() -> Settings:
    return Settings()
