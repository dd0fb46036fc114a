// The imagegen playground: plain ES2020 modules, no framework, nothing from another host. This one
// holds the form and a job's life from submit to images; job.js follows a job while it runs, api.js
// talks to the API (relative URLs, so the page works wherever the API is mounted), results.js shows
// images, history.js keeps this browser's jobs, quality.js draws the model card, image.js is the
// form's Image section (a picture to start from and a mask painted over it; png.js encodes them),
// key.js the API key where the service wants one, tabs.js the tabs.
//
// Previews: the page asks for them (the checkbox, on by default) and shows each one the event stream
// brings under the progress bar while the job runs; the final images replace it.
//
// Seeds go up to 2**63-1, past the range a JS number holds exactly: the page always sends a seed
// (rolling one when the field is empty), keeps it as a digit string, and writes it into the JSON
// text as it is; an image's seed (seed + i) is computed with BigInt.

import { TERMINAL, call, jobPath } from "./api.js";
import { forget, remember, renderHistory, saveHistory } from "./history.js";
import { imageFields, setImageModel, setupImage } from "./image.js";
import { follow, hidePreview, seconds, setBusy, setStatus, showProgress, showQueued } from "./job.js";
import { renderQuality } from "./quality.js";
import { showResults } from "./results.js";
import { askForKeyIf, setupKey } from "./key.js";
import { selectTab, setupTabs } from "./tabs.js";

const $ = (id) => document.getElementById(id);

const state = { models: [], samplers: [], job: null };

// --- the form --------------------------------------------------------------------------------

const generators = () => state.models.filter((m) => m.kind === "generator");
const modelInfo = (ref) => state.models.find((m) => m.ref === ref);
const currentModel = () => modelInfo($("model").value);

function option(value, text, selected = false) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = text;
  o.selected = selected;
  return o;
}

function linkedClassifier(info) {
  const link = info.links && info.links.guidance_classifier;
  if (!link) return null;
  const found = state.models.find((m) => m.kind === "guidance-classifier" && (m.ref === link || (m.name === link && m.latest)));
  return found ? found.ref : null;
}

function formatScale(v) { return Number(v).toFixed(1); }

function showScale() { $("guidance_scale-value").textContent = formatScale($("guidance_scale").value); }
function showEta() { $("eta-value").textContent = Number($("eta").value).toFixed(2); }

function showSampler() {
  const s = state.samplers.find((x) => x.name === $("sampler").value);
  $("sampler-hint").textContent = s ? s.description : "";
  // eta only means something to DDIM: the API refuses it elsewhere
  $("eta-field").hidden = $("sampler").value !== "ddim";
}

/** Classes past this many get a search field above the picker. */
const SEARCHABLE_CLASSES = 20;

/** The picker's options: the model's classes whose name holds the search text (all when it is empty),
 * then "none" if the model has a null class; `keep` stays selected if it is among them. */
function showClasses(info, keep) {
  const query = $("class-search").value.trim().toLowerCase();
  const names = info.class_names.filter((name) => name.toLowerCase().includes(query));
  const none = info.null_class === null ? [] : [option("", "none (unconditional)")];
  $("class_label").replaceChildren(...names.map((name, i) => option(name, name, i === 0)), ...none);
  if (names.includes(keep)) $("class_label").value = keep;
}

/** Fill the form with the model's classes and its card's defaults. */
function applyModel() {
  const info = currentModel();
  if (!info) return;
  const d = info.defaults;
  // a model of many classes (ImageNet's 1,000) gets a search field that narrows the picker
  $("class-search").hidden = info.class_names.length <= SEARCHABLE_CLASSES;
  $("class-search").value = "";
  showClasses(info, $("class_label").value);

  const classifier = linkedClassifier(info);
  $("guidance").querySelector('option[value="classifier"]').disabled = !classifier;
  if (!classifier) $("guidance").value = "cfg";
  $("guidance-hint").textContent = classifier
    ? `Classifier guidance uses ${classifier}.`
    : "This model links no guidance classifier: classifier-free guidance only.";

  const scale = $("guidance_scale");
  scale.max = String(Math.max(10, Math.ceil(d.guidance_scale * 2)));
  scale.value = String(d.guidance_scale);
  $("scale-ticks").replaceChildren(option(String(d.guidance_scale), "default"));
  const mark = $("guidance_scale-default");
  mark.textContent = `▲ card default ${formatScale(d.guidance_scale)}`;
  const frac = d.guidance_scale / Number(scale.max);
  mark.style.left = `calc(8px + (100% - 16px) * ${frac})`;
  mark.classList.toggle("flip", frac > 0.6);

  $("sampler").value = d.sampler;
  $("steps").value = String(d.steps);
  if (info.num_train_steps) $("steps").max = String(info.num_train_steps);
  $("num_images").value = String(d.num_images);
  $("eta").value = String(d.eta);
  showCard(info);
  showScale();
  showEta();
  showSampler();
  setImageModel(info);
  $("quality-model").value = info.ref;
  if (!$("panel-quality").hidden) loadQuality();
}

// the card's notes say "Interim model..." until a model has had its full training
const isInterim = (info) => /^\s*interim\b/i.test(info.notes || "");

/** One line about the model under its picker; the card's notes and facts behind a disclosure, so
 * that a long card never pushes the class picker below the fold. */
function showCard(info) {
  const space = info.space === "latent" ? ` · latent (${info.backbone})` : "";
  const kind = `${info.image_size}×${info.image_size} ${info.channels === 1 ? "grayscale" : "color"}${space}`;
  $("model-hint").textContent = [kind, `${info.class_names.length} classes`, ...(isInterim(info) ? ["interim"] : [])]
    .join(" · ");
  $("model-notes").textContent = info.notes || "";
  $("model-notes").hidden = !info.notes;
  const facts = [["version", `${info.ref}${info.latest ? " (latest)" : ""}`], ["created", info.created_at],
    ["classes", info.class_names.length > SEARCHABLE_CLASSES
      ? `${info.class_names.length} (search them above the class picker)` : info.class_names.join(", ")],
    ["network", `${info.backbone}, ${info.space} space, ${info.num_train_steps} training steps`],
    ["null class", info.null_class === null ? "none: guidance scale 1 only" : String(info.null_class)],
    ["defaults", `${info.defaults.sampler} ${info.defaults.steps} steps, ${info.defaults.guidance} ${formatScale(info.defaults.guidance_scale)}`],
    ["guidance classifier", linkedClassifier(info) || "none"]];
  $("model-facts").replaceChildren(...facts.filter(([, v]) => v).flatMap(([k, v]) => {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = v;
    return [dt, dd];
  }));
  $("model-card").hidden = false;
}

function randomSeed() {
  // 32 bits, as A1111 rolls them: short enough to read and retype
  return String(crypto.getRandomValues(new Uint32Array(1))[0]);
}

function numberField(fields, name) {
  const raw = $(name).value.trim();
  if (raw === "") return; // the card's default
  const n = Number(raw);
  fields[name] = Number.isFinite(n) ? n : raw; // not a number: let the API say what is wrong
}

/** The request body as JSON text, and the seed it carries. */
function requestBody() {
  const fields = { model: $("model").value || null };
  const label = $("class_label").value;
  fields.class_label = label === "" ? null : label;
  fields.guidance = $("guidance").value;
  fields.guidance_scale = Number($("guidance_scale").value);
  fields.sampler = $("sampler").value;
  numberField(fields, "steps");
  numberField(fields, "num_images");
  if (fields.sampler === "ddim") fields.eta = Number($("eta").value);
  Object.assign(fields, imageFields());
  fields.previews = $("previews").checked;
  let seed = $("seed").value.trim();
  if (seed === "" || seed === "-1") seed = randomSeed(); // -1: "random", as in A1111
  const digits = /^\d+$/.test(seed);
  if (digits) seed = BigInt(seed).toString(); // no leading zeros: they are not JSON
  const json = JSON.stringify(fields);
  return { json: `${json.slice(0, -1)},"seed":${digits ? seed : JSON.stringify(seed)}}`, seed };
}

function fields() { return [...document.querySelectorAll("#form .field[data-field]")]; }

// the control an error is about: the mask's is its canvas, which comes before its brush slider
const CONTROL = "input, select, canvas[tabindex]";

function clearErrors() {
  for (const box of fields()) {
    box.classList.remove("invalid");
    box.querySelector(".error").textContent = "";
    const control = box.querySelector(CONTROL);
    if (control) control.removeAttribute("aria-invalid");
  }
  $("form-error").textContent = "";
}

/** A problem document next to the fields it names; the rest (or a plain detail) under the form. */
function showProblem(error) {
  const problem = error.problem || { detail: error.message };
  askForKeyIf(error);
  const errors = Array.isArray(problem.errors) ? problem.errors : [];
  const elsewhere = [];
  let first = null;
  for (const { field, message } of errors) {
    const box = document.querySelector(`#form .field[data-field="${CSS.escape(field)}"]`);
    if (!box || box.closest("[hidden]")) {
      elsewhere.push(`${field}: ${message}`);
      continue;
    }
    box.classList.add("invalid");
    const out = box.querySelector(".error");
    out.textContent = out.textContent ? `${out.textContent}; ${message}` : message;
    const control = box.querySelector(CONTROL);
    control.setAttribute("aria-invalid", "true");
    first = first || control;
  }
  let text = errors.length ? elsewhere.join("; ") : (problem.detail || problem.title || "");
  if (text && problem.retryAfter) text += ` (retry in ${problem.retryAfter} s)`;
  $("form-error").textContent = text;
  if (first) first.focus();
}

/** Put a job's settings back into the form: `seed` and `count` override the job's own. */
function reuse(entry, seed = entry.request.seed, count = entry.request.num_images) {
  if (!modelInfo(entry.model)) {
    $("form-error").textContent = `model ${entry.model} is no longer in the model store`;
    return;
  }
  clearErrors();
  $("model").value = entry.model;
  applyModel();
  const r = entry.request;
  $("class_label").value = r.class_label === null ? "" : currentModel().class_names[r.class_label];
  if (r.guidance === "classifier" && !$("guidance").querySelector('option[value="classifier"]').disabled) $("guidance").value = "classifier";
  $("guidance_scale").value = String(r.guidance_scale);
  $("sampler").value = r.sampler;
  $("steps").value = String(r.steps);
  $("eta").value = String(r.eta);
  $("seed").value = String(seed);
  $("num_images").value = String(count);
  showScale();
  showEta();
  showSampler();
  selectTab($("tab-generate"));
  $("form").scrollIntoView({ block: "start" });
  $("generate").focus();
  $("status").textContent = `Settings of job ${entry.id.slice(0, 8)} restored.`;
}

// --- a job, from submit to images ------------------------------------------------------------

async function submit(event) {
  event.preventDefault();
  if (state.job && !state.job.done) return;
  clearErrors();
  const body = requestBody();
  setBusy(true);
  $("cancel").hidden = true;
  hidePreview();
  $("notes").hidden = true;
  setStatus("submitting", "Submitting…");
  let doc;
  try {
    ({ data: doc } = await call("POST", "generate", body.json));
  } catch (e) {
    setBusy(false);
    $("job").hidden = true;
    showProblem(e);
    return;
  }
  const job = { id: doc.id, seed: body.seed, done: false, streaming: false, events: null, timer: null, polling: false,
    previews: 0 };
  state.job = job;
  $("job").dataset.job = job.id;
  $("cancel").hidden = false;
  if (TERMINAL.has(doc.status)) { finish(job, doc); return; }
  if (doc.status === "queued") showQueued(doc); else showProgress(doc.progress);
  follow(job, finish);
}

async function cancel() {
  const job = state.job;
  if (!job || job.done) return;
  $("cancel").disabled = true;
  setStatus("canceling", "Canceling…");
  try {
    const { data } = await call("POST", jobPath(job.id, "/cancel"));
    // a running job stops at its next sampler step: the stream (or the poll) brings the end
    if (TERMINAL.has(data.status)) finish(job, data);
  } catch (e) {
    $("cancel").disabled = false;
    showProblem(e);
  }
}

function finish(job, doc) {
  if (job.done) return;
  job.done = true;
  if (job.events) job.events.close();
  clearInterval(job.timer);
  setBusy(false);
  const entry = historyEntry(job, doc);
  if (entry) { remember(entry); listHistory(); }
  const took = seconds(doc);
  const notes = Array.isArray(doc.notes) ? doc.notes : [];
  $("notes").textContent = notes.length ? `Note: ${notes.join("; ")}.` : "";
  $("notes").hidden = notes.length === 0;
  if (doc.status === "succeeded") {
    hidePreview(); // the final images replace it
    $("progress").max = 1;
    $("progress").value = 1;
    setStatus("succeeded", `Done: ${doc.images.length} ${doc.images.length === 1 ? "image" : "images"}`
      + (took ? ` in ${took} s.` : "."));
    show(entry);
  } else if (doc.status === "canceled") {
    const p = doc.progress;
    setStatus("canceled", `Job canceled${p && p.total ? ` at step ${p.step} of ${p.total}` : ""}.`);
    if (!$("preview").hidden) $("preview-caption").textContent += " (the last one before the job ended)";
  } else {
    setStatus("failed", `Job failed: ${doc.error ? doc.error.message : "unknown error"}`);
  }
}

function historyEntry(job, doc) {
  if (!doc.request) return null;
  const info = modelInfo(doc.model);
  const r = doc.request;
  return {
    id: doc.id, model: doc.model, status: doc.status, finishedAt: doc.finished_at || new Date().toISOString(),
    className: r.class_label === null ? "unconditional" : info ? info.class_names[r.class_label] : `class ${r.class_label}`,
    request: { class_label: r.class_label, num_images: r.num_images, guidance: r.guidance, guidance_scale: r.guidance_scale,
      sampler: r.sampler, steps: r.steps, eta: r.eta, seed: job.seed,
      strength: r.init_image ? r.strength : null, inpainting: Boolean(r.mask) },
    images: (doc.images || []).map((im) => im.index),
  };
}

// --- history (this browser's jobs, in localStorage) -------------------------------------------

async function showFromHistory(entry) {
  if (entry.status !== "succeeded") {
    setStatus(entry.status, `Job ${entry.id.slice(0, 8)} was ${entry.status}: no images.`);
    return;
  }
  try {
    await call("GET", jobPath(entry.id));
  } catch (e) {
    setStatus("expired", e.status === 404 ? `Job ${entry.id.slice(0, 8)}: ${e.message}` : e.message);
    return;
  }
  $("job").dataset.job = entry.id;
  setStatus("succeeded", `Job ${entry.id.slice(0, 8)} from the history.`);
  show(entry);
}

function show(entry) {
  $("empty").hidden = true;
  showResults($("results"), entry, reuse);
}

/** Delete the job on the service (its images go too), then its history entry. A job the service no
 * longer has (expired, deleted elsewhere) leaves the history all the same. */
async function deleteFromHistory(entry) {
  try {
    await call("DELETE", jobPath(entry.id));
  } catch (e) {
    if (e.status !== 404) {
      askForKeyIf(e);
      setStatus("failed", `Could not delete job ${entry.id.slice(0, 8)}: ${e.message}`);
      return;
    }
  }
  forget(entry.id);
  if ($("job").dataset.job === entry.id) {
    $("results").replaceChildren();
    $("job").hidden = true;
    $("empty").hidden = false;
  }
  listHistory();
  $("history-title").focus();
}

function listHistory() {
  const count = renderHistory($("history"), showFromHistory, deleteFromHistory);
  $("history-empty").hidden = count > 0;
  $("clear-history").hidden = count === 0;
}

// --- the quality card ------------------------------------------------------------------------

async function loadQuality() {
  const ref = $("quality-model").value;
  if (!ref) return;
  const box = $("quality");
  box.setAttribute("aria-busy", "true");
  try {
    const { data } = await call("GET", `models/${encodeURIComponent(ref)}`);
    if ($("quality-model").value === ref) renderQuality(box, data);
  } catch (e) {
    box.textContent = `Could not load ${ref}: ${e.message}`;
  } finally {
    box.removeAttribute("aria-busy");
  }
}

// --- start ------------------------------------------------------------------------------------

async function start() {
  $("form").addEventListener("submit", submit);
  setupImage();
  $("model").addEventListener("change", () => { clearErrors(); applyModel(); });
  $("sampler").addEventListener("change", showSampler);
  $("class-search").addEventListener("input", () => { const info = currentModel(); if (info) showClasses(info, $("class_label").value); });
  $("guidance_scale").addEventListener("input", showScale);
  $("eta").addEventListener("input", showEta);
  $("dice").addEventListener("click", () => { $("seed").value = randomSeed(); });
  $("cancel").addEventListener("click", cancel);
  $("clear-history").addEventListener("click", () => { saveHistory([]); listHistory(); });
  $("quality-model").addEventListener("change", loadQuality);
  setupTabs((id) => { if (id === "tab-quality") loadQuality(); });
  setupKey(load);
  await load();
}

/** The models and samplers, then the form; a load that needs a key asks for it and waits. */
async function load() {
  listHistory(); // its thumbnails are fetched anew, with the key if one was just entered
  $("load-error").hidden = true;
  try {
    const [models, samplers] = await Promise.all([call("GET", "models"), call("GET", "samplers")]);
    state.models = models.data;
    state.samplers = samplers.data;
  } catch (e) {
    askForKeyIf(e);
    $("load-error").textContent = `Could not load the models: ${e.message}`;
    $("load-error").hidden = false;
    $("generate").disabled = true;
    return;
  }
  $("generate").disabled = Boolean(state.job && !state.job.done);
  const gens = generators();
  if (gens.length === 0) {
    $("load-error").textContent = "The model store has no generator: install one, then reload.";
    $("load-error").hidden = false;
    $("generate").disabled = true;
    return;
  }
  const chosen = gens.find((m) => m.default) || gens.find((m) => m.latest) || gens[0];
  const label = (m) => `${m.ref}${m.default ? " (default)" : ""}`;
  $("model").replaceChildren(...gens.map((m) => option(m.ref, label(m), m === chosen)));
  $("quality-model").replaceChildren(...gens.map((m) => option(m.ref, label(m), m === chosen)));
  $("sampler").replaceChildren(...state.samplers.map((s) => option(s.name, s.name)));
  applyModel();
  document.documentElement.dataset.ready = "true";
}

start();
