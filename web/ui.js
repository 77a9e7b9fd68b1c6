// Enlace's web UI: small progressive enhancements; every page works without this script.
// Loaded as a module from /ui/static/ui.js (no outside host, no inline script).

// Filter a list as one types: <input data-filter="#list"> over <li data-text="...">.
for (const input of document.querySelectorAll("input[data-filter]")) {
  const list = document.querySelector(input.dataset.filter);
  if (!list) continue;
  const status = document.querySelector("[aria-live]");
  input.addEventListener("input", () => {
    const q = input.value.trim().toLowerCase();
    let shown = 0;
    for (const li of list.children) {
      const hit = !q || (li.dataset.text || "").toLowerCase().includes(q);
      li.hidden = !hit;
      if (hit) shown += 1;
    }
    if (status) status.textContent = `${shown} app(s)`;
  });
}

// A diagnostic's "line N" link selects that line of the recipe source.
for (const link of document.querySelectorAll("a[data-line]")) {
  link.addEventListener("click", (e) => {
    const area = document.getElementById("source");
    if (!area) return;
    e.preventDefault();
    const n = Number(link.dataset.line);
    const lines = area.value.split("\n");
    let start = 0;
    for (let i = 0; i < n - 1 && i < lines.length; i += 1) start += lines[i].length + 1;
    const end = start + (lines[n - 1] || "").length;
    area.focus();
    area.setSelectionRange(start, end);
  });
}

// Data pills: a button with data-insert puts its field reference into the last focused field.
let lastField = null;
document.addEventListener("focusin", (e) => {
  if (e.target.matches && e.target.matches("textarea, input[type=text]")) lastField = e.target;
});
for (const pill of document.querySelectorAll("button[data-insert]")) {
  pill.addEventListener("click", () => {
    const field = lastField || document.getElementById(pill.dataset.target || "");
    if (!field) return;
    const text = pill.dataset.insert;
    const at = field.selectionStart ?? field.value.length;
    field.value = field.value.slice(0, at) + text + field.value.slice(field.selectionEnd ?? at);
    field.focus();
    field.setSelectionRange(at + text.length, at + text.length);
  });
}
