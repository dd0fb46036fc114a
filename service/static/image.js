// The form's Image section: an uploaded picture to start from (img2img) and a mask painted over it
// (inpainting).
//
// The page does the resizing itself, so that what it shows is exactly what it sends: the picture is
// center-cropped to a square, scaled to the model's size on a canvas and converted to the model's
// channels (grayscale by the ITU-R 601 luma, as Pillow converts), then encoded by png.js as a PNG of
// that size and channel count. The API therefore never has to resize it (`resize` is not sent) and
// the job has no notes about it. The mask is painted on a finer canvas (several screen pixels per
// model pixel) and sent as a black-and-white grayscale PNG of the model's size: a model pixel is
// white (regenerated) when at least half of it is painted. A latent model (a DiT) gets no mask: the
// service does not inpaint in latent space (the API answers 422 to a mask), so the paint tools are
// hidden and a hint says why; its picture is still used for img2img.

import { base64, encodePNG } from "./png.js";

const $ = (id) => document.getElementById(id);

const MASK_COLOR = "rgb(255, 64, 160)"; // the paint, shown half transparent over the picture
const MASK_PX = 256; // about this many canvas pixels across the mask, whatever the model's size

const state = {
  size: 0, channels: 1, // the model's
  inpainting: true, // whether the model takes a mask: a pixel-space one does, a latent one does not
  source: null, // the uploaded picture (an ImageBitmap), kept to redraw it when the model changes
  sourceName: "",
  pixels: null, // the picture as sent: size * size * channels bytes
  painted: false, // the mask has paint on it
  drawing: null, // the pointer that paints, and where it was
  cursor: null, // the keyboard brush, in model pixels
};

const maskCanvas = () => $("mask-canvas");
const scale = () => maskCanvas().width / state.size; // mask canvas pixels per model pixel

/** Whether a picture is loaded. */
export const hasImage = () => state.pixels !== null;

// --- the picture ------------------------------------------------------------------------------

function drawPicture() {
  const size = state.size;
  const canvas = $("image-canvas");
  canvas.width = canvas.height = size;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.fillStyle = "#000"; // transparent parts become black, as the API would see them
  ctx.fillRect(0, 0, size, size);
  const { width: w, height: h } = state.source;
  const side = Math.min(w, h);
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(state.source, (w - side) / 2, (h - side) / 2, side, side, 0, 0, size, size);
  const rgba = ctx.getImageData(0, 0, size, size);
  const n = size * size;
  const pixels = new Uint8Array(n * state.channels);
  for (let i = 0; i < n; i++) {
    const [r, g, b] = rgba.data.subarray(4 * i, 4 * i + 3);
    if (state.channels === 1) {
      const gray = Math.round((r * 299 + g * 587 + b * 114) / 1000);
      pixels[i] = gray;
      rgba.data[4 * i] = rgba.data[4 * i + 1] = rgba.data[4 * i + 2] = gray; // show what is sent
    } else {
      pixels.set([r, g, b], 3 * i);
    }
  }
  ctx.putImageData(rgba, 0, 0);
  state.pixels = pixels;
  const what = [];
  if (w !== h) what.push(`center-cropped from ${w}×${h}`);
  if (side !== size) what.push(`scaled from ${side}×${side}`);
  $("image-note").textContent = `${state.sourceName}: ${what.length ? `${what.join(", ")} to ` : ""}`
    + `${size}×${size} ${state.channels === 1 ? "grayscale" : "color"}, as it is sent.`;
}

async function loadFile() {
  const file = $("init_image").files[0];
  setFieldError("init_image", "");
  if (!file || !state.size) return;
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch {
    setFieldError("init_image", `${file.name} is not an image this browser can read.`);
    return;
  }
  state.source = bitmap;
  state.sourceName = file.name;
  drawPicture();
  resetMask(); // a new picture, a new mask
  $("image-tools").hidden = false;
  showStrength();
  showMaskState();
}

function removeImage() {
  state.source = null;
  state.pixels = null;
  $("init_image").value = "";
  $("image-tools").hidden = true;
  $("image-note").textContent = "";
  resetMask();
  $("init_image").focus();
}

function setFieldError(field, text) {
  const box = document.querySelector(`.field[data-field="${field}"]`);
  box.classList.toggle("invalid", Boolean(text));
  box.querySelector(".error").textContent = text;
}

// --- the mask ---------------------------------------------------------------------------------

function resetMask() {
  const canvas = maskCanvas();
  const k = Math.max(1, Math.round(MASK_PX / state.size));
  canvas.width = canvas.height = state.size * k; // also clears it
  state.cursor = null;
  $("brush-cursor").hidden = true;
  showMaskState();
}

function brushWidth() { return Number($("brush").value) * scale(); }

function paintLine(from, to) {
  const ctx = maskCanvas().getContext("2d", { willReadFrequently: true });
  ctx.strokeStyle = ctx.fillStyle = MASK_COLOR;
  ctx.lineWidth = brushWidth();
  ctx.lineCap = ctx.lineJoin = "round";
  ctx.beginPath();
  ctx.moveTo(from.x, from.y);
  ctx.lineTo(to.x + 0.01, to.y); // a zero-length line draws nothing: a dot is a tiny segment
  ctx.stroke();
}

function invertMask() {
  const canvas = maskCanvas();
  const ctx = canvas.getContext("2d");
  // xor with an opaque fill: paint where there was none, none where there was
  ctx.globalCompositeOperation = "xor";
  ctx.fillStyle = MASK_COLOR;
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.globalCompositeOperation = "source-over";
  showMaskState();
}

/** The mask at the model's size: 255 where at least half of a model pixel is painted, else 0. */
function maskPixels() {
  const size = state.size;
  const small = document.createElement("canvas");
  small.width = small.height = size;
  const ctx = small.getContext("2d", { willReadFrequently: true });
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = "high"; // averages the painted share of each model pixel
  ctx.drawImage(maskCanvas(), 0, 0, size, size);
  const alpha = ctx.getImageData(0, 0, size, size).data;
  const out = new Uint8Array(size * size);
  for (let i = 0; i < out.length; i++) out[i] = alpha[4 * i + 3] >= 128 ? 255 : 0;
  return out;
}

function showMaskState() {
  state.painted = state.inpainting && hasImage() && maskPixels().some((v) => v > 0);
  // resampling only means something to inpainting: the API refuses it without a mask
  $("resample-field").hidden = !state.painted;
  $("mask-state").textContent = !hasImage() ? "" : state.painted
    ? "Inpainting: the painted part is regenerated, the rest kept."
    : "No mask: the whole image is regenerated from it (img2img).";
}

function canvasPoint(event) {
  const canvas = maskCanvas();
  const box = canvas.getBoundingClientRect();
  return { x: (event.clientX - box.left) * canvas.width / box.width, y: (event.clientY - box.top) * canvas.height / box.height };
}

function onPointerDown(event) {
  if (event.button !== 0 && event.pointerType === "mouse") return;
  event.preventDefault();
  maskCanvas().setPointerCapture(event.pointerId);
  const p = canvasPoint(event);
  state.drawing = { id: event.pointerId, last: p };
  paintLine(p, p);
}

function onPointerMove(event) {
  if (!state.drawing || state.drawing.id !== event.pointerId) return;
  const p = canvasPoint(event);
  paintLine(state.drawing.last, p);
  state.drawing.last = p;
}

function onPointerUp(event) {
  if (!state.drawing || state.drawing.id !== event.pointerId) return;
  state.drawing = null;
  showMaskState();
}

// the keyboard brush: arrows move it one model pixel (with Shift, painting on the way), Space or
// Enter paints where it is
function showCursor() {
  const c = state.cursor;
  const cursor = $("brush-cursor");
  cursor.hidden = c === null;
  if (c === null) return;
  const d = (Number($("brush").value) / state.size) * 100;
  cursor.style.width = cursor.style.height = `${d}%`;
  cursor.style.left = `${((c.x + 0.5) / state.size) * 100 - d / 2}%`;
  cursor.style.top = `${((c.y + 0.5) / state.size) * 100 - d / 2}%`;
}

function onKey(event) {
  const moves = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
  const at = (c) => ({ x: (c.x + 0.5) * scale(), y: (c.y + 0.5) * scale() });
  if (state.cursor === null) state.cursor = { x: Math.floor(state.size / 2), y: Math.floor(state.size / 2) };
  const c = state.cursor;
  if (event.key in moves) {
    event.preventDefault();
    const [dx, dy] = moves[event.key];
    const next = { x: Math.min(state.size - 1, Math.max(0, c.x + dx)), y: Math.min(state.size - 1, Math.max(0, c.y + dy)) };
    if (event.shiftKey) paintLine(at(c), at(next));
    state.cursor = next;
    if (event.shiftKey) showMaskState();
  } else if (event.key === " " || event.key === "Enter") {
    event.preventDefault();
    paintLine(at(c), at(c));
    showMaskState();
  } else {
    return;
  }
  showCursor();
}

// --- strength, and the request fields ---------------------------------------------------------

function showStrength() { $("strength-value").textContent = Number($("strength").value).toFixed(2); }
function showBrush() { $("brush-value").textContent = `${$("brush").value} px`; showCursor(); }

/** The request fields of the Image section: none without a picture. */
export function imageFields() {
  if (!hasImage()) return {};
  const size = state.size;
  const fields = {
    init_image: `data:image/png;base64,${base64(encodePNG(size, size, state.channels, state.pixels))}`,
    strength: Number($("strength").value),
  };
  if (state.painted) {
    fields.mask = `data:image/png;base64,${base64(encodePNG(size, size, 1, maskPixels()))}`;
    const raw = $("resample_steps").value.trim();
    const n = Number(raw);
    if (raw !== "") fields.resample_steps = Number.isFinite(n) ? n : raw; // not a number: the API says what is wrong
  }
  return fields;
}

/** The model changed: draw the picture again at its size and channels (a mask of another size is cleared). */
export function setImageModel(info) {
  const resized = info.image_size !== state.size;
  state.size = info.image_size;
  state.channels = info.channels;
  $("brush").max = String(Math.max(2, Math.round(state.size / 2)));
  state.inpainting = info.space !== "latent";
  // paint hidden from view is not sent, and not kept for the next model either
  if (resized || !state.inpainting) resetMask();
  document.querySelectorAll("#image-tools .paint").forEach((el) => { el.hidden = !state.inpainting; });
  $("mask-off").hidden = state.inpainting;
  $("image-legend").textContent = state.inpainting ? "optional: img2img and inpainting"
    : "optional: img2img (no inpainting for a latent model)";
  if (state.source) drawPicture();
  showMaskState();
  showBrush();
}

export function setupImage() {
  $("init_image").addEventListener("change", loadFile);
  $("image-remove").addEventListener("click", removeImage);
  $("mask-clear").addEventListener("click", () => { resetMask(); maskCanvas().focus(); });
  $("mask-invert").addEventListener("click", invertMask);
  $("strength").addEventListener("input", showStrength);
  $("brush").addEventListener("input", showBrush);
  const canvas = maskCanvas();
  canvas.addEventListener("pointerdown", onPointerDown);
  canvas.addEventListener("pointermove", onPointerMove);
  canvas.addEventListener("pointerup", onPointerUp);
  canvas.addEventListener("pointercancel", onPointerUp);
  canvas.addEventListener("keydown", onKey);
  canvas.addEventListener("blur", () => { $("brush-cursor").hidden = true; });
  canvas.addEventListener("focus", () => {
    if (state.cursor === null) state.cursor = { x: Math.floor(state.size / 2), y: Math.floor(state.size / 2) };
    showCursor();
  });
  showStrength();
}
