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
