// Talking to the API: every URL relative to the page (document.baseURI), so the page works
// wherever the API is mounted; errors as problem documents (RFC 9457).

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

/** `{status, data}` of a 2xx answer; any other throws an ApiError carrying the problem document. */
export async function call(method, path, body) {
  const init = { method, headers: { Accept: "application/json, application/problem+json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = body;
  }
  let response;
  try {
    response = await fetch(url(path), init);
  } catch (e) {
    throw new ApiError({ title: "Network error", detail: `the service did not answer (${e.message})` }, 0);
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!response.ok) {
    const problem = data && typeof data === "object" ? data : { title: response.statusText, detail: text.slice(0, 300) };
    problem.retryAfter = response.headers.get("Retry-After");
    throw new ApiError(problem, response.status);
  }
  return { status: response.status, data };
}
