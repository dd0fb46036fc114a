// A job on the page while it runs: its status line, progress bar and previews, and the following of
// it (the job's event stream, with a poll beside it for the queue position and as a safety net for a
// dropped stream) until it ends, when `finish(job, doc)` of the caller gets the final document.

import { TERMINAL, call, jobPath, stream } from "./api.js";

const $ = (id) => document.getElementById(id);

const POLL_MS = 1000;

export function setStatus(status, text) {
  $("job").hidden = false;
  $("job").dataset.status = status;
  $("status").textContent = text;
}

export function setBusy(busy) {
  $("generate").disabled = busy;
  $("cancel").hidden = !busy;
  $("cancel").disabled = false;
}

export function showQueued(doc) {
  const p = doc.queue_position;
  setStatus("queued", p === null || p === undefined ? "Queued."
    : p === 0 ? "Queued: next in line." : `Queued: position ${p} (${p} ${p === 1 ? "job" : "jobs"} ahead).`);
  $("progress").removeAttribute("value"); // indeterminate while waiting
}

/** A preview (a base64 PNG grid of the images forming) under the progress bar. */
export function showPreview(job, progress) {
  job.previews += 1;
  $("preview-img").src = `data:image/png;base64,${progress.preview}`;
  $("preview-img").alt = `Preview of the images at step ${progress.step} of ${progress.total}`;
  $("preview-caption").textContent = `Preview, step ${progress.step} of ${progress.total}`;
  $("preview").dataset.step = String(progress.step);
  $("preview").hidden = false;
}

export function hidePreview() {
  $("preview").hidden = true;
  $("preview-img").removeAttribute("src");
  delete $("preview").dataset.step;
}

export function showProgress(progress) {
  if (!progress || !progress.total) return;
  setStatus("running", `Running: step ${progress.step} of ${progress.total}.`);
  $("progress").max = progress.total;
  $("progress").value = progress.step;
}

export function follow(job, finish) {
  // read with fetch rather than EventSource, which cannot send an API key
  const events = new AbortController();
  job.events = { close: () => events.abort() };
  stream(jobPath(job.id, "/events"), (name, data) => {
    if (job.done) return;
    if (name === "end") { finish(job, JSON.parse(data)); return; }
    if (name !== "progress") return;
    job.streaming = true;
    const progress = JSON.parse(data);
    showProgress(progress);
    if (progress.preview) showPreview(job, progress);
  }, events.signal).catch(() => { /* aborted, or dropped: the poll below carries on alone */ })
    .finally(() => { job.streaming = false; });
  // the stream is silent while the job waits in the queue: poll for its position (and as a safety
  // net for a stream that dropped)
  job.timer = setInterval(() => poll(job, finish), POLL_MS);
}

async function poll(job, finish) {
  if (job.done || job.polling) return;
  job.polling = true;
  try {
    const { data } = await call("GET", jobPath(job.id));
    if (job.done) return;
    if (TERMINAL.has(data.status)) finish(job, data);
    else if (data.status === "queued") showQueued(data);
    else if (!job.streaming) {
      if (data.progress) showProgress(data.progress); else setStatus("running", "Running…");
    }
  } catch (e) {
    if (e.status === 404) finish(job, { id: job.id, status: "failed", error: { message: e.message } });
  } finally {
    job.polling = false;
  }
}

export function seconds(doc) {
  const start = Date.parse(doc.started_at || doc.created_at);
  const end = Date.parse(doc.finished_at);
  return Number.isFinite(start) && Number.isFinite(end) ? ((end - start) / 1000).toFixed(1) : null;
}
