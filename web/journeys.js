// The Journeys page: refreshes the counts in place every five seconds from
// /ui/journeys/counts (same window and recipes as the page). Without it, the page shows the
// counts of its load.
const live = document.getElementById("journeys-live");
if (live) {
  const windowKey = live.dataset.window || "24h";
  const refresh = async () => {
    let r;
    try {
      r = await fetch(`/ui/journeys/counts?window=${encodeURIComponent(windowKey)}`, { credentials: "same-origin", headers: { accept: "application/json" } });
    } catch {
      return; // offline for a moment: try again at the next tick
    }
    if (!r.ok) return;
    const { counts, window: w } = await r.json();
    for (const el of document.querySelectorAll("[data-count]")) {
      const c = counts[el.dataset.count] || {};
      const n = el.dataset.sum ? Object.values(c).reduce((a, b) => a + b, 0) : (c[el.dataset.bucket] || 0);
      if (el.textContent !== String(n)) el.textContent = String(n);
    }
    live.dataset.updated = String(Date.now());
    live.firstChild.textContent = `Runs since ${w.since} (${w.label}), updated ${new Date().toLocaleTimeString()}.`;
  };
  setInterval(refresh, 5000);
}
