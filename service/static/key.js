// The API key, where the service has API_KEYS configured: kept for this tab (sessionStorage), or on
// this device (localStorage) when the user asks; sent as `Authorization: Bearer <key>` by api.js.

const KEY_NAME = "imagegen.playground.key";

function stores() {
  const out = [];
  try { out.push(sessionStorage, localStorage); } catch { /* storage disabled: the key lives in memory */ }
  return out;
}

let memory = null;

/** The key in use, or null when none is set (the API is open, or the user has not entered one). */
export function getKey() {
  if (memory) return memory;
  for (const s of stores()) {
    const key = s.getItem(KEY_NAME);
    if (key) return (memory = key);
  }
  return null;
}

/** Use `key` from now on: for this tab, or on this device too when `remember`. */
export function setKey(key, remember) {
  forgetKey();
  memory = key;
  const [session, local] = stores();
  try { (remember ? local : session)?.setItem(KEY_NAME, key); } catch { /* full or disabled: memory only */ }
}

export function forgetKey() {
  memory = null;
  for (const s of stores()) s.removeItem(KEY_NAME);
}

// --- the key bar: shown when the API asks for a key, or while one is in use ------------------------

const $ = (id) => document.getElementById(id);

function showBar(message) {
  const key = getKey();
  $("key-form").hidden = false;
  $("key-forget").hidden = !key;
  $("key-status").textContent = message;
}

/** Ask for a key if `error` (an ApiError) is the API's 401 (no key sent) or 403 (this one refused). */
export function askForKeyIf(error) {
  if (error.status !== 401 && error.status !== 403) return;
  showBar(error.status === 403 && getKey() ? `The service refused this key (${error.message}): enter another.`
    : `This service needs an API key (${error.message}).`);
  $("api-key").setAttribute("aria-invalid", "true");
  $("api-key").focus();
}

/** Wire the key bar; `onChange()` when a key is entered or forgotten (the caller reloads what it needs). */
export function setupKey(onChange) {
  if (getKey()) showBar("Using the API key kept for this tab or device.");
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (!key) { $("key-status").textContent = "Enter a key first."; $("api-key").focus(); return; }
    setKey(key, $("key-remember").checked);
    $("api-key").value = "";
    $("api-key").removeAttribute("aria-invalid");
    showBar($("key-remember").checked ? "Using this key; kept on this device." : "Using this key; kept for this tab.");
    onChange();
  });
  $("key-forget").addEventListener("click", () => {
    forgetKey();
    showBar("Key forgotten.");
    onChange();
  });
}
