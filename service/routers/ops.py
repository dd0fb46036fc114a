"""Operations: liveness, readiness and Prometheus metrics (the page at `/` is in page.py)."""

from __future__ import annotations

from typing import Annotated

import redis.exceptions
from fastapi import APIRouter, Depends, Query, Request, Response

from service.auth import authenticate
from service.deps import BackendDep
from service.problems import REDIS_RETRY_AFTER_S, Problem, problem_type, responses
from service.schemas import Health, Readiness

router = APIRouter(tags=["operations"])

NO_WORKER_RETRY_AFTER_S = 10


@router.get("/healthz", response_model=Health, summary="The API process is up",
            description="Answers without touching Redis: for liveness probes.")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness, summary="Redis answers and a worker is alive",
            description="503 (a problem document saying what is missing) when Redis is unreachable or no "
                        "worker on any model's queue has sent a heartbeat within WORKER_HEARTBEAT_TTL. "
                        "`?workers=0` asks about Redis alone: the readiness of an API whose workers scale to zero "
                        "while the queues are empty (deploy/k8s).",
            responses=responses())
def readyz(backend: BackendDep,
           workers: Annotated[int, Query(ge=0, le=1, description="1: a live worker is needed; 0: Redis alone")] = 1,
           ) -> dict[str, object]:
    settings = backend.settings
    try:
        backend.redis.ping()
        alive = len(backend.live_workers()) if workers else 0
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
        raise Problem(503, f"not ready: Redis is unreachable ({type(e).__name__})", type=problem_type("not-ready"),
                      headers={"Retry-After": str(REDIS_RETRY_AFTER_S)}, checks={"redis": "unreachable"}) from None
    if workers and not alive:
        raise Problem(503, f"not ready: no worker alive on the model queues of {settings.queue_name!r} (none has sent "
                           f"a heartbeat in the last {settings.worker_heartbeat_ttl} s); start one with "
                           "`imagegen worker`",
                      type=problem_type("not-ready"), headers={"Retry-After": str(NO_WORKER_RETRY_AFTER_S)},
                      checks={"redis": "ok", "workers": alive})
    return {"status": "ready", "redis": "ok", "workers": alive}


@router.get("/metrics", response_class=Response, summary="Prometheus metrics",
            description="Requests, latency, queue depth, jobs by status, live workers, batch sizes, sampling "
                        "seconds and images generated, in the Prometheus text format.",
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format 0.0.4"},
                       **responses(401, 403, 429)},
            dependencies=[Depends(authenticate)])
def metrics(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
