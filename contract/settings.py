"""Every setting of the API and the workers, read from the environment in one place."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    # the API and every worker default to the same local server; `imagegen up` starts a private one
    # instead when REDIS_URL is not set in its environment
    redis_url: str = Field("redis://127.0.0.1:6379/0",
                           description="redis:// or rediss:// URL of the queue and result store")
    redis_max_connections: int = Field(
        2048, ge=8, description="most connections to Redis per API process and kind (sync, async); each request "
                                "holding ?wait= or an event stream keeps one, so this bounds those per process")
    queue_name: str = Field("imagegen", description="RQ queue the API enqueues generation jobs on")
    result_ttl: int = Field(86_400, ge=60, description="seconds a finished job and its PNGs are kept")
    max_images_per_job: int = Field(64, ge=1, description="most images one request may ask for")
    max_steps: int = Field(1000, ge=1, le=1000, description="most sampler steps one request may ask for")
    default_model: str | None = Field(None, description="model used when a request names none (default: "
                                                        "fashion-mnist, else the only generator)")
    model_store: str | None = Field(None, description="model store root (default: the repository's model_store/models)")
    webhook_secret: str = Field("", description="HMAC-SHA256 key for webhook signatures (X-Signature)")
    webhook_timeout: float = Field(5.0, gt=0, description="seconds one webhook POST may take")
    webhook_max_attempts: int = Field(5, ge=1, description="webhook deliveries tried before giving up")
    job_timeout: int = Field(600, ge=1, description="seconds a job may run before it fails")
    worker_heartbeat_ttl: int = Field(30, ge=5, description="a worker silent for this long counts as dead")
    log_level: str = Field("info", description="log level of the API and the workers")
    # --- who may call the API, and how much (the API alone reads these) ---
    api_keys: str = Field("", description="comma-separated API keys; with these or API_KEYS_FILE set, every "
                                          "endpoint but /healthz, /readyz, / and the docs needs "
                                          "Authorization: Bearer <key>; none set: the API is open")
    api_keys_file: str | None = Field(None, description="file of API keys stored as sha256 hex digests, one per "
                                                        "line (# comments allowed), so that the keys themselves "
                                                        "are kept nowhere on the server")
    rate_limit_per_minute: int = Field(0, ge=0, description="requests per minute one API key (or one client "
                                                            "address, when the API is open) may make; 0 = no limit")
    max_queue_depth: int = Field(10_000, ge=0, description="jobs waiting in the queue beyond which POST /generate "
                                                          "answers 429; 0 = no limit")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="largest request body accepted (413 above)")
    cors_origins: str = Field("", description="comma-separated origins allowed to call the API from a browser "
                                              "(CORS), e.g. https://app.example.com; none by default")

    @property
    def cors_origin_list(self) -> list[str]:
        """CORS_ORIGINS as a list (a plain string field: pydantic-settings would parse a list as JSON)."""
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]


@lru_cache
def get_settings() -> Settings:
    return Settings()
