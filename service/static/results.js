// A finished job on the page: its images in a grid, each a PNG download with its seed under it.
// Seeds are digit strings (they may pass 2**53): an image's seed, seed + i, is computed with BigInt.

import { imagePath, imageURL, jobPath, showImage } from "./api.js";

export function button(text, onClick, attrs = {}) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  for (const [k, v] of Object.entries(attrs)) b.setAttribute(k, v);
  b.addEventListener("click", onClick);
  return b;
}

export function describe(entry) {
  const r = entry.request;
  const image = r.inpainting ? ` · inpainting, strength ${Number(r.strength).toFixed(2)}`
    : r.strength !== null && r.strength !== undefined ? ` · img2img, strength ${Number(r.strength).toFixed(2)}` : "";
  return `${entry.className} · ${entry.model} · ${r.sampler} ${r.steps} steps · ${r.guidance} ${Number(r.guidance_scale).toFixed(1)}${image}`;
}

/** Point the link `a` at the file at `path` (fetched first where the API wants a key). */
function setHref(a, path) {
  imageURL(path).then((href) => { a.href = href; }, () => { a.removeAttribute("href"); a.textContent += " (expired)"; });
}

export function imageSeed(entry, index) { return (BigInt(entry.request.seed) + BigInt(index)).toString(); }

/** The images of `entry` (a history entry) into `container`; `onReuse(entry, seed, count)` refills the form. */
export function showResults(container, entry, onReuse) {
  const head = document.createElement("div");
  head.className = "results-head";
  const text = document.createElement("p");
  text.textContent = describe(entry);
  const grid = document.createElement("a");
  grid.download = `imagegen-${entry.id.slice(0, 8)}-grid.png`;
  grid.textContent = "Download grid";
  setHref(grid, jobPath(entry.id, "/grid.png"));
  head.append(text, button("Reuse settings", () => onReuse(entry), { class: "reuse-job" }), grid);

  const list = document.createElement("ul");
  list.className = "images";
  for (const index of entry.images) {
    const seed = imageSeed(entry, index);
    const link = document.createElement("a");
    link.download = `${entry.className.replaceAll(" ", "-").toLowerCase()}-seed${seed}.png`;
    link.title = "Download PNG";
    const img = document.createElement("img");
    img.alt = `${entry.className}, seed ${seed}`;
    showImage(img, imagePath(entry.id, index), () => { img.alt = "image expired"; });
    // the link downloads what the image shows (a blob URL where the API wants a key)
    img.addEventListener("load", () => { link.href = img.src; }, { once: true });
    link.append(img);
    const caption = document.createElement("figcaption");
    const s = document.createElement("span");
    s.className = "seed";
    s.textContent = seed;
    caption.append("seed ", s, " ",
      button("Reuse", () => onReuse(entry, seed, 1), { class: "link", "aria-label": `Reuse settings with seed ${seed}` }));
    const figure = document.createElement("figure");
    figure.append(link, caption);
    const item = document.createElement("li");
    item.append(figure);
    list.append(item);
  }
  container.replaceChildren(head, list);
}
