// The one place Enlace's tests start a browser: Debian's chromium (ENLACE_CHROMIUM, or
// /usr/bin/chromium), headless, driven by playwright-core, which never downloads one.
// Scenarios import `launch` from here and print their observations as JSON on stdout for
// the Rust test that started them.
import { chromium } from "playwright-core";

export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

export async function launch() {
  const executablePath = process.env.ENLACE_CHROMIUM || "/usr/bin/chromium";
  return chromium.launch({ executablePath, args: CHROMIUM_ARGS, headless: true });
}

// Runs `scenario(browser)` and prints its result as one JSON line; exits 1 on error.
export async function run(scenario) {
  const browser = await launch();
  try {
    const out = await scenario(browser);
    process.stdout.write(JSON.stringify(out) + "\n");
  } catch (e) {
    process.stderr.write(String(e && e.stack || e) + "\n");
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
}

// Watches a page for what must not happen in a passing test: a console error, a page error,
// a request that failed, or an answer >= 400 other than those `expected(url, status)` allows
// (and the console error Chromium logs for such an expected answer).
// `check()` throws with everything seen.
export function guard(page, expected = () => false) {
  const problems = [];
  const consoleErrors = [];
  const allowed = new Set();
  page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("requestfailed", (r) => {
    // A beacon cut short by leaving the page is not a failure of the page.
    if (r.failure() && /ERR_ABORTED/.test(r.failure().errorText) && r.resourceType() === "ping") return;
    problems.push(`request failed: ${r.method()} ${r.url()} (${r.failure() && r.failure().errorText})`);
  });
  page.on("response", (r) => {
    if (r.status() < 400) return;
    if (expected(r.url(), r.status())) allowed.add(r.status());
    else problems.push(`HTTP ${r.status()}: ${r.request().method()} ${r.url()}`);
  });
  return {
    problems,
    check() {
      // Chromium logs every answer >= 400 as a console error: those the scenario expects are not problems.
      for (const text of consoleErrors) {
        const m = /the server responded with a status of (\d+)/.exec(text);
        if (!(m && allowed.has(Number(m[1])))) problems.push(`console error: ${text}`);
      }
      if (problems.length) throw new Error("the page misbehaved:\n" + problems.join("\n"));
    },
  };
}

// Saves a full-page screenshot as DIR/NAME.png (DIR from ENLACE_SCREENSHOTS, else /tmp).
export async function shot(page, name) {
  const dir = process.env.ENLACE_SCREENSHOTS || "/tmp/enlace-screenshots";
  const fs = await import("node:fs");
  fs.mkdirSync(dir, { recursive: true });
  const path = `${dir}/${name}.png`;
  await page.screenshot({ path, fullPage: true });
  return path;
}

// The page's icon, fetched after a page has loaded and cancelled when a scenario moves on at
// once: our navigation, not a failure. Any answer the icon gets is still checked.
const ICON_ABORTED = /^request failed: GET \S+\/ui\/static\/icon\.svg \(net::ERR_ABORTED\)$/;

// `watch.check()` (see `guard`) without the icon requests our own navigation cancelled.
export function checkIgnoringIconAborts(watch) {
  const keep = watch.problems.filter((p) => !ICON_ABORTED.test(p));
  watch.problems.splice(0, watch.problems.length, ...keep);
  watch.check();
}

// A function `snap(name)` that saves DIR/PREFIX-NN-NAME-1280.png and -390.png (full page),
// and adds to `problems` when the page is wider than 390 px at 390 px (every page must
// work on a phone). The viewport goes back to 1280 x 900.
export function twoWidths(page, dir, prefix, problems) {
  let n = 0;
  return async (name) => {
    n += 1;
    const base = `${dir}/${prefix}-${String(n).padStart(2, "0")}-${name}`;
    await page.screenshot({ path: `${base}-1280.png`, fullPage: true });
    await page.setViewportSize({ width: 390, height: 844 });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    if (overflow > 1) problems.push(`${name}: the page is ${overflow}px wider than 390px`);
    await page.screenshot({ path: `${base}-390.png`, fullPage: true });
    await page.setViewportSize({ width: 1280, height: 900 });
  };
}
