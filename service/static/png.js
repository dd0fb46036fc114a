// A minimal PNG encoder: 8-bit grayscale or RGB, no filtering, deflate "stored" blocks (no
// compression). A canvas only ever encodes RGBA; the API wants a PNG of the model's own channel count
// (one for Fashion-MNIST), and the images the page sends are a few kilobytes, so size does not matter.

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function adler32(bytes) {
  let a = 1;
  let b = 0;
  for (const x of bytes) {
    a = (a + x) % 65521;
    b = (b + a) % 65521;
  }
  return ((b << 16) | a) >>> 0;
}

function u32(out, at, v) {
  out[at] = v >>> 24; out[at + 1] = (v >>> 16) & 0xff; out[at + 2] = (v >>> 8) & 0xff; out[at + 3] = v & 0xff;
}

/** `data` as a zlib stream (RFC 1950) of stored deflate blocks (RFC 1951, sec. 3.2.4). */
function zlibStored(data) {
  const MAX = 65535;
  const blocks = Math.max(1, Math.ceil(data.length / MAX));
  const out = new Uint8Array(2 + blocks * 5 + data.length + 4);
  out[0] = 0x78; out[1] = 0x01; // deflate, 32K window, no dictionary; (0x7801 % 31 == 0)
  let at = 2;
  for (let i = 0; i < blocks; i++) {
    const start = i * MAX;
    const len = Math.min(MAX, data.length - start);
    out[at++] = i === blocks - 1 ? 1 : 0; // BFINAL, BTYPE 00 (stored)
    out[at++] = len & 0xff; out[at++] = len >>> 8;
    out[at++] = ~len & 0xff; out[at++] = (~len >>> 8) & 0xff;
    out.set(data.subarray(start, start + len), at);
    at += len;
  }
  u32(out, at, adler32(data));
  return out;
}

function chunk(type, data) {
  const out = new Uint8Array(12 + data.length);
  u32(out, 0, data.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  u32(out, 8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

/** PNG file bytes of `pixels` (row-major, `channels` bytes per pixel: 1 gray, 3 RGB). */
export function encodePNG(width, height, channels, pixels) {
  if (channels !== 1 && channels !== 3) throw new Error(`channels must be 1 or 3, got ${channels}`);
  const row = width * channels;
  const raw = new Uint8Array(height * (row + 1)); // each row: filter type 0 (none), then its bytes
  for (let y = 0; y < height; y++) raw.set(pixels.subarray(y * row, (y + 1) * row), y * (row + 1) + 1);
  const header = new Uint8Array(13);
  u32(header, 0, width);
  u32(header, 4, height);
  header.set([8, channels === 1 ? 0 : 2, 0, 0, 0], 8); // bit depth 8, gray or truecolor
  const parts = [new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk("IHDR", header),
    chunk("IDAT", zlibStored(raw)), chunk("IEND", new Uint8Array(0))];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

/** Bytes as base64 text. */
export function base64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}
