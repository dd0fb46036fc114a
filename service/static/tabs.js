// The page's tabs (WAI-ARIA tabs pattern): a click or the arrow, Home and End keys select one and
// show its panel.

const $ = (id) => document.getElementById(id);

const tabs = () => [...document.querySelectorAll('[role="tab"]')];

let onSelect = () => {};

/** Select `tab` (a tab element) and show its panel. */
export function selectTab(tab) {
  for (const t of tabs()) {
    const selected = t === tab;
    t.setAttribute("aria-selected", String(selected));
    t.tabIndex = selected ? 0 : -1;
    $(t.getAttribute("aria-controls")).hidden = !selected;
  }
  onSelect(tab.id);
}

function onTabKey(event) {
  const all = tabs();
  const i = all.indexOf(event.target);
  const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: all.length - 1 }[event.key];
  if (next === undefined || i < 0) return;
  event.preventDefault();
  const tab = all[(next + all.length) % all.length];
  tab.focus();
  selectTab(tab);
}

/** Wire the tabs; `onSelect(id)` after the tab with that id is selected. */
export function setupTabs(onSelected) {
  onSelect = onSelected;
  for (const t of tabs()) {
    t.addEventListener("click", () => selectTab(t));
    t.addEventListener("keydown", onTabKey);
  }
}
