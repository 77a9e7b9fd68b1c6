// The social calendar (/ui/social): drag a post's chip to another day (month view: it keeps
// its time of day) or hour (week view) to reschedule it, and live per-network previews of
// the compose form. Loaded as a module from /ui/static/calendar.js (no outside host, no
// inline script). Without it the page still works: a post opened from the calendar has a
// labelled "Reschedule to" date-time field, and the compose form is checked when it is sent.

const errorBox = document.getElementById("cal-error");
const live = document.getElementById("cal-live");

function say(text) {
  if (live) live.textContent = text;
}

function showError(text) {
  if (!errorBox) return;
  errorBox.textContent = text;
  errorBox.hidden = false;
  errorBox.focus();
}

async function send(url, fields) {
  const r = await fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: { accept: "application/json", "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams(fields),
  });
  let body = null;
  try {
    body = await r.json();
  } catch {
    body = null;
  }
  return { status: r.status, ok: r.ok, body };
}

// ---------------------------------------------------------------- drag to reschedule

const cal = document.querySelector(".cal[data-editable]");
if (cal) {
  const CELL = ".cal-day[data-date], .cal-hour[data-date]";
  let dragged = null;
  let over = null;
  const mark = (cell) => {
    if (over === cell) return;
    if (over) over.classList.remove("drop-here");
    over = cell;
    if (over) over.classList.add("drop-here");
  };
  cal.addEventListener("dragstart", (e) => {
    const chip = e.target.closest && e.target.closest("li.chip[data-movable]");
    if (!chip) return;
    dragged = chip;
    e.dataTransfer.effectAllowed = "move";
    e.dataTransfer.setData("text/plain", chip.dataset.post);
    chip.classList.add("dragging");
  });
  cal.addEventListener("dragend", () => {
    if (dragged) dragged.classList.remove("dragging");
    dragged = null;
    mark(null);
  });
  cal.addEventListener("dragover", (e) => {
    if (!dragged) return;
    const cell = e.target.closest && e.target.closest(CELL);
    if (!cell) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = "move";
    mark(cell);
  });
  cal.addEventListener("drop", async (e) => {
    const chip = dragged;
    const cell = e.target.closest && e.target.closest(CELL);
    mark(null);
    if (!chip || !cell) return;
    e.preventDefault();
    // Month view: the same time of day on the new day; week view: the hour dropped on.
    const at = `${cell.dataset.date}T${cell.dataset.time || chip.dataset.time}`;
    if (at === chip.dataset.local) return;
    const home = chip.parentElement;
    const after = chip.nextSibling;
    const homeCell = home.closest(CELL);
    const list = cell.querySelector("ul.chips");
    list.appendChild(chip);
    cell.classList.remove("empty");
    chip.setAttribute("aria-busy", "true");
    try {
      const r = await send(`/ui/social/posts/${encodeURIComponent(chip.dataset.post)}/schedule`, {
        _csrf: cal.dataset.csrf,
        at,
        tz: cal.dataset.tz,
        targets: chip.dataset.targets || "",
        back: cal.dataset.back,
      });
      if (!r.ok || !r.body || !r.body.ok) {
        throw new Error((r.body && r.body.error) || `the server answered ${r.status}`);
      }
      chip.dataset.local = r.body.local;
      chip.dataset.time = r.body.time;
      chip.querySelector(".chip-time").textContent = r.body.time;
      if (errorBox) errorBox.hidden = true;
      say(r.body.message);
    } catch (err) {
      // Put the chip back where it was and say why.
      home.insertBefore(chip, after);
      if (homeCell && !homeCell.querySelector("li.chip") && cell.querySelector("li.chip") === null) homeCell.classList.add("empty");
      showError(`The post was not moved: ${err.message}`);
    } finally {
      chip.removeAttribute("aria-busy");
    }
  });
}

// ---------------------------------------------------------------- live previews

const form = document.getElementById("compose-form");
const previews = document.getElementById("previews");
if (form && previews && form.dataset.validate) {
  let timer = null;
  let seq = 0;
  const el = (tag, cls, text) => {
    const n = document.createElement(tag);
    if (cls) n.className = cls;
    if (text !== undefined && text !== null) n.textContent = text;
    return n;
  };
  const render = (j) => {
    previews.replaceChildren();
    if (j.message) previews.append(el("p", "help", j.message));
    for (const c of j.checks || []) {
      const card = el("article", `preview ${c.ok ? "fits" : "does-not-fit"}`);
      card.dataset.channel = c.channel;
      card.dataset.network = c.network;
      card.append(el("h4", null, `${c.name} · ${c.network}`));
      card.append(el("p", "preview-count", c.ok ? c.count : "Does not fit"));
      card.append(el("p", "preview-text", c.preview || "(no text)"));
      if (c.problems.length) {
        const ul = el("ul", "preview-problems");
        for (const p of c.problems) ul.append(el("li", "field-error", p));
        card.append(ul);
      }
      previews.append(card);
    }
  };
  const check = async () => {
    const mine = (seq += 1);
    const fields = new URLSearchParams(new FormData(form));
    fields.delete("when");
    const r = await send(form.dataset.validate, fields);
    if (mine !== seq) return;
    if (!r.ok || !r.body) {
      previews.replaceChildren(el("p", "field-error", `The check did not answer (${r.status}); the post is checked again when it is saved.`));
      return;
    }
    render(r.body);
  };
  const soon = () => {
    clearTimeout(timer);
    timer = setTimeout(check, 250);
  };
  form.addEventListener("input", soon);
  form.addEventListener("change", soon);
  check();
}
