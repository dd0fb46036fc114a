// This browser's jobs, kept in localStorage (newest first), listed with thumbnails.

import { imagePath, showImage } from "./api.js";
import { button, describe } from "./results.js";

const HISTORY_KEY = "imagegen.playground.history";
const HISTORY_MAX = 30;

export function loadHistory() {
  try {
    const list = JSON.parse(localStorage.getItem(HISTORY_KEY) || "[]");
    return Array.isArray(list) ? list : [];
  } catch { return []; }
}

export function saveHistory(list) {
  try { localStorage.setItem(HISTORY_KEY, JSON.stringify(list.slice(0, HISTORY_MAX))); } catch { /* full or disabled */ }
}

/** Put `entry` first (once). */
export function remember(entry) {
  saveHistory([entry, ...loadHistory().filter((e) => e.id !== entry.id)]);
}

/** Drop the entry of job `id`. */
export function forget(id) {
  saveHistory(loadHistory().filter((e) => e.id !== id));
}

/** The stored jobs into the list `ul`; `onShow(entry)` when one is clicked, `onDelete(entry)` when its
 * delete button is. Returns how many. */
export function renderHistory(ul, onShow, onDelete) {
  const list = loadHistory();
  ul.replaceChildren(...list.map((entry) => {
    const b = button("", () => onShow(entry), { class: "history-item", "data-job": entry.id });
    const thumbs = document.createElement("span");
    thumbs.className = "thumbs";
    for (const index of entry.images.slice(0, 4)) {
      const img = document.createElement("img");
      img.alt = "";
      img.loading = "lazy";
      showImage(img, imagePath(entry.id, index), () => img.remove()); // expired
      thumbs.append(img);
    }
    const text = document.createElement("span");
    text.className = "history-text";
    const when = new Date(entry.finishedAt);
    text.textContent = `${entry.className}, ${entry.request.num_images} × ${entry.request.sampler} ${entry.request.steps}`
      + (entry.status === "succeeded" ? "" : ` (${entry.status})`)
      + (Number.isNaN(when.getTime()) ? "" : ` · ${when.toLocaleTimeString()}`);
    b.append(thumbs, text);
    b.setAttribute("aria-label", `Show job: ${describe(entry)}, ${entry.status}`);
    const remove = button("Delete", () => onDelete(entry), { class: "history-delete", "data-job": entry.id,
      "aria-label": `Delete job ${entry.id.slice(0, 8)} and its images from the service` });
    const item = document.createElement("li");
    item.append(b, remove);
    return item;
  }));
  return list.length;
}
