"""`imagegen submit`: send one request to a running service with the Python client, wait for it,
and print the job document as JSON; with `--out`, also download its PNGs and grid.

The flags are `imagegen generate`'s, spelled the same, but nothing is checked here: the server
validates against its model cards, and its problem document comes back as one error line (exit 2 for
a 4xx answer, 1 for anything else). Only the files that `--init-image` and `--mask` name are read
here (a file that cannot be read exits 2 naming its flag); they are sent as base64 PNGs.

`--previews` asks for previews of the images forming and follows the job's event stream: each
progress event that carries one prints a line on stderr and, with `--out`, is saved as
`preview-<step>.png` beside the images.

`--delete` removes the job from the service once it has ended and its PNGs are written into `--out`
(`DELETE /jobs/{id}`: the job, its PNGs and its Idempotency-Key), for images that must not stay on
the server until its RESULT_TTL. There are no commands for a job by id (the CLI makes a job and
follows it to its end): a job submitted with `--no-wait` is the Python client's to cancel or delete.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from contract.errors import UsageError
from imagegen.request_flags import add_setting_arguments, given_settings

DEFAULT_URL = "http://127.0.0.1:8000"
"""Where `imagegen up` serves by default."""

WAIT_TIMEOUT_S = 600.0
"""Default limit on waiting for the job to end."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `imagegen submit`."""
    p.add_argument("--url", default=os.environ.get("IMAGEGEN_URL", DEFAULT_URL),
                   help=f"the service's base URL (default: $IMAGEGEN_URL, else {DEFAULT_URL})")
    p.add_argument("--api-key", default=os.environ.get("IMAGEGEN_API_KEY"), metavar="KEY",
                   help="bearer key, where the service has API_KEYS (default: $IMAGEGEN_API_KEY)")
    p.add_argument("--model", metavar="NAME[@VERSION]", help="model (default: the service's default model)")
    add_setting_arguments(p, local=False)
    p.add_argument("--init-image", metavar="PATH",
                   help="img2img / inpainting: a PNG to start from, of the model's size and channels "
                        "(else see --resize)")
    p.add_argument("--mask", metavar="PATH",
                   help="inpainting: a PNG of --init-image's size, white = regenerate, black = keep; "
                        "needs --init-image")
    p.add_argument("--resize", action="store_true",
                   help="let the service convert, center-crop and resize an --init-image (and --mask) of another "
                        "size or channel count (the job's notes say what it did)")
    p.add_argument("--webhook-url", metavar="URL", help="POSTed the final job document when the job ends")
    p.add_argument("--idempotency-key", metavar="KEY",
                   help="a retry with the same key returns the same job instead of a new one")
    p.add_argument("--out", metavar="DIR",
                   help="wait, then write 0.png .. N-1.png and grid.png into DIR (created if missing)")
    p.add_argument("--no-wait", action="store_true",
                   help="print the job as submitted (queued) and exit, without waiting for it")
    p.add_argument("--delete", action="store_true",
                   help="once the job has ended and --out holds its PNGs, delete it from the service (the job, its "
                        "images and its Idempotency-Key), rather than leave it there until the service's RESULT_TTL")
    p.add_argument("--timeout", type=float, default=WAIT_TIMEOUT_S, metavar="S",
                   help=f"most seconds to wait for the job to end (default: {WAIT_TIMEOUT_S:g})")


def class_label(text: str) -> int | str | None:
    """The JSON value of --class-label: an int for digits, null for 'none', else the name."""
    text = text.strip()
    if text.lower() in ("none", "null"):
        return None
    return int(text) if text.lstrip("-").isdigit() else text


def error_line(error: Any) -> str:
    """One line for an ApiError: the field errors when there are any (`steps: ...`), else the detail."""
    from imagegen.client.errors import field_error

    fields = [field_error(e) for e in error.errors]
    return "; ".join(f for f in fields if f) or error.message


def _save(job: Any, out: Path) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(job.images()):
        path = out / f"{i}.png"
        image.save(path)
        paths.append(str(path))
    job.grid().save(out / "grid.png")
    return paths + [str(out / "grid.png")]


class PreviewSaver:
    """The `on_progress` of `--previews`: a line on stderr per preview, the preview saved into `out`."""

    def __init__(self, out: Path | None) -> None:
        self.out = out
        self.saved: list[str] = []

    def __call__(self, progress: Any) -> None:
        if progress.preview is None:
            return
        where = ""
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            path = self.out / f"preview-{progress.step}.png"
            progress.preview.save(path)
            self.saved.append(str(path))
            where = f": {path}"
        print(f"imagegen submit: step {progress.step}/{progress.total}, preview{where}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Submit, wait unless --no-wait, print the job JSON, write the PNGs with --out."""
    import httpx

    from imagegen.client import ApiError, Client
    from imagegen.generate import read_input

    if args.no_wait and args.out:
        raise UsageError("--out needs the job to end: leave out --no-wait")
    if args.no_wait and args.previews:
        raise UsageError("--previews follows the job to its end: leave out --no-wait")
    if args.delete and not args.out:
        raise UsageError("--delete removes the job's images from the service: give --out to keep them here first")
    if args.timeout <= 0:
        raise UsageError(f"--timeout must be > 0 (got {args.timeout:g})")
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    init_image, mask = read_input(args.init_image, "--init-image"), read_input(args.mask, "--mask")
    # --resize is sent only when given, so that the server's defaults stay in one place
    resize = True if args.resize else None
    settings = given_settings(args)
    settings["class_label"] = class_label(args.class_label)

    try:
        with Client(args.url, api_key=args.api_key) as api:
            job = api.generate(**settings, model=args.model, webhook_url=args.webhook_url, init_image=init_image,
                               mask=mask, resize=resize, idempotency_key=args.idempotency_key)
            if args.previews:
                job = job.wait(timeout=args.timeout, stream=True, on_progress=PreviewSaver(out))
            elif not args.no_wait:
                job = job.wait(timeout=args.timeout)
            print(json.dumps(job.document))
            if job.done and job.status != "succeeded":
                why = (job.error or {}).get("message") or job.status
                print(f"imagegen submit: error: job {job.id} {job.status}: {why}", file=sys.stderr)
                if args.delete:
                    job.delete()
                return 1
            if out is not None:
                written = _save(job, out)
                print(f"imagegen submit: wrote {len(written) - 1} images and grid.png to {out}", file=sys.stderr)
            if args.delete:
                job.delete()
                print(f"imagegen submit: deleted job {job.id} from the service", file=sys.stderr)
    except ApiError as e:
        if 400 <= e.status < 500:
            raise UsageError(error_line(e)) from None
        print(f"imagegen submit: error: {error_line(e)}", file=sys.stderr)
        return 1
    except httpx.TransportError as e:
        print(f"imagegen submit: error: cannot reach {args.url}: {e or type(e).__name__}", file=sys.stderr)
        return 1
    except TimeoutError as e:
        print(f"imagegen submit: error: {e}", file=sys.stderr)
        return 1
    return 0
