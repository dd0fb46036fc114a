"""The job document of `GET /jobs/{id}` (shared/spec/api.md) for an ended job, rendered from its
record: what a webhook posts. service.documents.document renders the same for the API, but it needs
the API's backend and imports its web stack; this stays torch- and FastAPI-free, and a test checks
that the two agree on every ended job.
"""

from __future__ import annotations

from typing import Any


def render(record: dict[str, Any]) -> dict[str, Any]:
    """The job document of `record` (a decoded `JobStore` record)."""
    job_id, status = record["id"], record["status"]
    succeeded = status == "succeeded"
    return {
        "id": job_id,
        "status": status,
        "model": record.get("model", ""),
        # the model is the document's own field; api.md's request echo leaves it out
        "request": {k: v for k, v in (record.get("request") or {}).items() if k != "model"},
        # the worker renders ended jobs only; a queued job's position is the API's to compute
        "queue_position": None,
        "progress": record.get("progress"),
        # the record stores "" for a time not reached yet
        "created_at": record.get("created_at") or "",
        "started_at": record.get("started_at") or None,
        "finished_at": record.get("finished_at") or None,
        "images": [{"index": im["index"], "seed": im["seed"], "url": f"/jobs/{job_id}/images/{im['index']}.png"}
                   for im in (record.get("images") or [])] if succeeded else [],
        "grid_url": f"/jobs/{job_id}/grid.png" if succeeded else None,
        "error": record.get("error") if status == "failed" else None,
        "notes": record.get("notes") or [],
    }
