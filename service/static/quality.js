// The "Model quality" tab: the model card's quality tables, and the FD-against-accuracy trade-off
// of its guidance sweep drawn as an inline SVG from the card's numbers. A figure the card does not
// have is said to be not measured, never estimated.

const SVG_NS = "http://www.w3.org/2000/svg";

// how evaluate_cmd.py names its tables, in the order a reader wants them
const TABLES = {
  guidance_sweep: "Guidance sweep: classifier-free guidance, DDIM 50 steps",
  steps_sweep: "Steps sweep: every sampler, at the best-FD guidance scale",
  classifier_guidance: "Classifier guidance, DDIM 50 steps",
};
const COLUMNS = ["sampler", "steps", "guidance", "guidance_scale", "eta", "fd", "accuracy", "n", "sampling_seconds"];
const HEADINGS = {
  guidance_scale: "scale", fd: "FD", accuracy: "accuracy", n: "images", sampling_seconds: "seconds",
};

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

export function format(key, value) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") {
    if (key === "accuracy" || key === "test_accuracy") return `${(value * 100).toFixed(1)}%`;
    if (key === "fd") return value.toFixed(2);
    return Number.isInteger(value) ? String(value) : String(+value.toFixed(4));
  }
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function isRowTable(value) {
  return Array.isArray(value) && value.length > 0 && value.every((r) => r && typeof r === "object" && !Array.isArray(r));
}

function rowTable(key, rows, defaultScale) {
  const keys = new Set(rows.flatMap((r) => Object.keys(r)));
  const columns = [...COLUMNS.filter((c) => keys.has(c)), ...[...keys].filter((c) => !COLUMNS.includes(c))];
  const numeric = new Set(columns.filter((c) => rows.some((r) => typeof r[c] === "number")));
  const marks = key === "guidance_sweep" && rows.some((r) => r.guidance_scale === defaultScale);
  const caption = el("caption", {}, TABLES[key] || key.replaceAll("_", " "));
  if (marks) caption.append(el("span", { class: "hint" }, ` (highlighted: the card's default scale, ${defaultScale})`));
  const head = el("tr", {}, ...columns.map((c) => el("th", { scope: "col" }, HEADINGS[c] || c.replaceAll("_", " "))));
  const body = rows.map((r) => el("tr", marks && r.guidance_scale === defaultScale ? { class: "is-default" } : {},
    ...columns.map((c) => el("td", numeric.has(c) ? { class: "num" } : {}, format(c, r[c])))));
  return el("div", { class: "table-wrap" }, el("table", { "data-table": key }, caption, el("thead", {}, head),
    el("tbody", {}, ...body)));
}

function pairsTable(key, object) {
  const rows = Object.entries(object).map(([k, v]) => el("tr", {}, el("th", { scope: "row" }, k.replaceAll("_", " ")),
    el("td", {}, format(k, v))));
  return el("div", { class: "table-wrap" }, el("table", { "data-table": key }, el("caption", {}, key.replaceAll("_", " ")),
    el("tbody", {}, ...rows)));
}

function niceTicks(lo, hi, count = 5) {
  const raw = (hi - lo || Math.abs(hi) || 1) / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const f = raw / magnitude;
  const step = magnitude * (f >= 7.5 ? 10 : f >= 3.5 ? 5 : f >= 1.5 ? 2 : 1);
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(+v.toFixed(10));
  return ticks;
}

/** FD (y, lower is better) against accuracy (x) along the guidance sweep, one point per scale. */
export function tradeoffPlot(sweep, defaultScale, floor) {
  const points = sweep.filter((r) => typeof r.fd === "number" && typeof r.accuracy === "number")
    .sort((a, b) => a.guidance_scale - b.guidance_scale);
  if (points.length === 0) return null;
  const W = 560, H = 340, left = 60, right = 20, top = 16, bottom = 52;
  const xs = points.map((p) => p.accuracy);
  const ys = points.map((p) => p.fd);
  if (floor && typeof floor.fd === "number") ys.push(floor.fd);
  const pad = (lo, hi) => { const d = (hi - lo) * 0.08 || Math.abs(hi) * 0.1 || 0.05; return [lo - d, hi + d]; };
  const [x0, x1] = pad(Math.min(...xs), Math.max(...xs));
  const [y0, y1] = pad(Math.min(...ys), Math.max(...ys));
  const X = (v) => left + ((v - x0) / (x1 - x0)) * (W - left - right);
  const Y = (v) => H - bottom - ((v - y0) / (y1 - y0)) * (H - top - bottom);

  const title = "FD against accuracy along the guidance sweep";
  const desc = points.map((p) => `scale ${p.guidance_scale}: FD ${format("fd", p.fd)}, accuracy ${format("accuracy", p.accuracy)}`).join("; ");
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": "plot-title plot-desc", class: "plot" });
  root.append(svg("title", { id: "plot-title" }, title), svg("desc", { id: "plot-desc" }, desc));

  const axes = svg("g", { class: "axes" });
  for (const t of niceTicks(x0, x1)) {
    if (t < x0 || t > x1) continue;
    axes.append(svg("line", { x1: X(t), x2: X(t), y1: top, y2: H - bottom, class: "grid" }),
      svg("text", { x: X(t), y: H - bottom + 16, "text-anchor": "middle" }, format("accuracy", t)));
  }
  for (const t of niceTicks(y0, y1)) {
    if (t < y0 || t > y1) continue;
    axes.append(svg("line", { x1: left, x2: W - right, y1: Y(t), y2: Y(t), class: "grid" }),
      svg("text", { x: left - 6, y: Y(t) + 4, "text-anchor": "end" }, format("", t)));
  }
  axes.append(svg("line", { x1: left, x2: W - right, y1: H - bottom, y2: H - bottom, class: "axis" }),
    svg("line", { x1: left, x2: left, y1: top, y2: H - bottom, class: "axis" }),
    svg("text", { x: (left + W - right) / 2, y: H - 10, "text-anchor": "middle", class: "label" },
      "accuracy: share of images classified as the requested class →"),
    svg("text", { x: 14, y: (top + H - bottom) / 2, "text-anchor": "middle", class: "label",
      transform: `rotate(-90 14 ${(top + H - bottom) / 2})` }, "FD (lower is better)"));
  root.append(axes);

  if (floor && typeof floor.fd === "number") {
    root.append(svg("line", { x1: left, x2: W - right, y1: Y(floor.fd), y2: Y(floor.fd), class: "floor" }),
      svg("text", { x: W - right - 4, y: Y(floor.fd) - 5, "text-anchor": "end", class: "floor-label" },
        `floor ${format("fd", floor.fd)} (training images)`));
  }
  root.append(svg("polyline", { points: points.map((p) => `${X(p.accuracy)},${Y(p.fd)}`).join(" "), class: "curve" }));
  for (const p of points) {
    const isDefault = p.guidance_scale === defaultScale;
    const dot = svg("circle", { cx: X(p.accuracy), cy: Y(p.fd), r: isDefault ? 7 : 4.5,
      class: isDefault ? "point is-default" : "point", "data-scale": p.guidance_scale });
    dot.append(svg("title", {}, `scale ${p.guidance_scale}: FD ${format("fd", p.fd)}, accuracy ${format("accuracy", p.accuracy)}`));
    root.append(dot, svg("text", { x: X(p.accuracy) + 8, y: Y(p.fd) - 8, class: isDefault ? "point-label is-default" : "point-label" },
      isDefault ? `s=${p.guidance_scale} (default)` : `s=${p.guidance_scale}`));
  }
  return root;
}

function notMeasured(what) {
  return el("p", { class: "not-measured" }, `${what}: not measured yet.`);
}

/** The quality card of `info` (a GET /models/{name} answer) into `container`. */
export function renderQuality(container, info) {
  const quality = info.quality || {};
  const defaultScale = info.defaults ? info.defaults.guidance_scale : null;
  const parts = [el("h2", {}, `Quality of ${info.ref}`)];
  if (Object.keys(quality).length === 0) {
    parts.push(el("p", { class: "not-measured", id: "quality-empty" },
      "Not measured yet: this model's card has no quality figures (imagegen evaluate --tables measures them)."));
    container.replaceChildren(...parts);
    return;
  }
  const figure = el("figure", { class: "tradeoff" });
  const sweep = Array.isArray(quality.guidance_sweep) ? quality.guidance_sweep : [];
  const plot = tradeoffPlot(sweep, defaultScale, quality.floor);
  if (plot) {
    figure.append(plot, el("figcaption", {}, "What a guidance scale buys: each point is one scale of the guidance "
      + "sweep; higher scales usually raise accuracy and, past a point, FD."));
    const unconditional = sweep.find((r) => typeof r.fd === "number" && typeof r.accuracy !== "number");
    if (unconditional) {
      figure.append(el("p", { class: "hint" }, `Scale ${unconditional.guidance_scale} (unconditional) has no accuracy `
        + `and is left out: FD ${format("fd", unconditional.fd)}.`));
    }
  } else {
    figure.append(notMeasured("Trade-off plot (the card has no guidance sweep)"));
  }
  parts.push(el("h3", {}, "Trade-off"), figure, el("h3", {}, "Tables"));

  const scalars = {};
  const keys = [...Object.keys(TABLES).filter((k) => k in quality), ...Object.keys(quality).filter((k) => !(k in TABLES))];
  let tables = 0;
  for (const key of keys) {
    const value = quality[key];
    if (isRowTable(value)) { parts.push(rowTable(key, value, defaultScale)); tables += 1; }
    else if (value && typeof value === "object" && !Array.isArray(value)) { parts.push(pairsTable(key, value)); tables += 1; }
    else scalars[key] = value;
  }
  if (!tables) parts.push(notMeasured("Quality tables"));
  if (Object.keys(scalars).length) {
    parts.push(el("h3", {}, "About the measurement"), el("dl", { class: "facts" },
      ...Object.entries(scalars).flatMap(([k, v]) => [el("dt", {}, k.replaceAll("_", " ")), el("dd", {}, format(k, v))])));
  }
  container.replaceChildren(...parts);
}
