// Talking to the API: every URL relative to the page (document.baseURI), so the page works
// wherever the API is mounted; errors as problem documents (RFC 9457). Where the service wants an
// API key, every request carries it in a header, which neither <img src> nor EventSource can send:
// images are fetched into blob URLs and the event stream is read with fetch.

import { getKey } from "./key.js";

export const url = (path) => new URL(path, document.baseURI).toString();
export const jobPath = (id, rest = "") => `jobs/${encodeURIComponent(id)}${rest}`;
export const imagePath = (id, index) => jobPath(id, `/images/${index}.png`);
export const TERMINAL = new Set(["succeeded", "failed", "canceled"]);

export class ApiError extends Error {
  constructor(problem, status) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.problem = problem;
    this.status = status;
  }
}

function headers(accept) {
  const h = { Accept: accept };
  const key = getKey();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

/** The response of a request; a failed connection throws an ApiError, an HTTP error does not. */
async function send(path, init) {
  try {
    return await fetch(url(path), init);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError({ title: "Network error", detail: `the service did not answer (${e.message})` }, 0);
  }
}

/** The ApiError of a non-2xx response, from its problem document. */
async function failure(response) {
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  const problem = data && typeof data === "object" ? data : { title: response.statusText, detail: text.slice(0, 300) };
  problem.retryAfter = response.headers.get("Retry-After");
  return new ApiError(problem, response.status);
}

/** `{status, data}` of a 2xx answer; any other throws an ApiError carrying the problem document. */
export async function call(method, path, body) {
  const init = { method, headers: headers("application/json, application/problem+json") };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = body;
  }
  const response = await send(path, init);
  if (!response.ok) throw await failure(response);
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  return { status: response.status, data };
}

/** A URL an <img> or a download link can use for the image at `path`: the API's own URL when no key
 * is needed, else a blob URL of the image fetched with the key. Throws an ApiError (e.g. expired). */
export async function imageURL(path) {
  if (!getKey()) return url(path);
  const response = await send(path, { headers: headers("image/png, application/problem+json") });
  if (!response.ok) throw await failure(response);
  return URL.createObjectURL(await response.blob());
}

/** Show the image at `path` in `img`; `onError()` where it cannot be had (expired, refused). */
export function showImage(img, path, onError) {
  img.addEventListener("error", onError, { once: true });
  imageURL(path).then((src) => { img.src = src; }, () => img.dispatchEvent(new Event("error")));
}

/** A parser of a server-sent event stream (the WHATWG "event stream" format): feed it the text as it
 * comes, in chunks cut anywhere; it calls `onEvent(name, data)` once per complete event. */
export function eventParser(onEvent) {
  let buffer = "";
  let event = { name: "message", data: [] };
  let afterCR = false; // the last chunk ended with \r: a \n starting this one is the same line break
  return (chunk) => {
    if (afterCR && chunk.startsWith("\n")) chunk = chunk.slice(1);
    if (!chunk) return;
    afterCR = chunk.endsWith("\r");
    buffer += chunk;
    const lines = buffer.split(/\r\n|\r|\n/);
    buffer = lines.pop(); // an unfinished line waits for the next chunk
    for (const line of lines) {
      if (line === "") { // a blank line ends an event
        if (event.data.length) onEvent(event.name, event.data.join("\n"));
        event = { name: "message", data: [] };
      } else if (!line.startsWith(":")) { // ':' starts a comment (the keep-alive pings)
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event.name = text;
        else if (field === "data") event.data.push(text);
      }
    }
  };
}

/** Read the server-sent events of `path`, calling `onEvent(name, data)` for each, until the stream
 * ends or `signal` aborts it; resolves when it ends, rejects with an ApiError if it cannot start. */
export async function stream(path, onEvent, signal) {
  const response = await send(path, { headers: headers("text/event-stream"), signal, cache: "no-store" });
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  const push = eventParser(onEvent);
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    push(value);
  }
}
