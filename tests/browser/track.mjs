// The web-tracking scenario of tests/e2e/track.rs: node track.mjs PAGE_URL ENLACE_BASE
// 1. Opens the page (it loads Enlace's /track.js; its address carries `enl=TOKEN`), never
//    consents, leaves: records every request to Enlace other than the script, the cookies
//    and the storage the page has.
// 2. Opens it again, waits, calls enlace.consent(true), stays ~400 ms, leaves (pagehide sends
//    the beacon): records the same.
import { run } from "./browser.mjs";

const [page_url, enlace] = process.argv.slice(2);

async function visit(context, consent) {
  const page = await context.newPage();
  const sent = [];
  page.on("request", (r) => {
    if (r.url().startsWith(enlace) && !r.url().endsWith("/track.js")) sent.push({ method: r.method(), url: r.url() });
  });
  await page.goto(page_url, { waitUntil: "load" });
  await page.waitForFunction(() => typeof window.enlace === "object");
  await page.waitForTimeout(300);
  const before = {
    sent: sent.length,
    cookies: (await context.cookies()).length,
    storage: await page.evaluate(() => window.localStorage.length + window.sessionStorage.length),
  };
  if (consent) {
    await page.evaluate(() => window.enlace.consent(true));
    await page.waitForTimeout(400);
  }
  const stored = await page.evaluate(() => window.localStorage.getItem("enlace_contact"));
  // Leaving the page: pagehide sends the beacon (and visibilitychange before it).
  await page.goto("about:blank");
  await page.waitForTimeout(500);
  await page.close();
  return { before, after: { sent: sent.length, stored, cookies: (await context.cookies()).length } };
}

run(async (browser) => {
  const context = await browser.newContext();
  const without = await visit(context, false);
  const withConsent = await visit(context, true);
  await context.close();
  return { without, with: withConsent };
});
