// The on-site message scenario of tests/e2e/web_channel.rs: node popup.mjs PAGE_A PAGE_B ENLACE
// PAGE_A carries the token of a contact with a discount pop-up waiting; PAGE_B the token of
// a contact whose pop-up is for a product it has bought since. On each: nothing shows (and
// nothing is asked of Enlace) before the page calls enlace.consent(true); after it, A's
// pop-up shows (then is closed with its button) and B's never does. Fails on any console
// error or failed request; saves screenshots (ENLACE_SCREENSHOTS).
import { run, guard, shot } from "./browser.mjs";

const [pageA, pageB, enlace] = process.argv.slice(2);

async function visit(context, url, name, expectPopup) {
  const page = await context.newPage();
  const g = guard(page);
  const asked = [];
  page.on("request", (r) => { if (r.url().startsWith(enlace) && !r.url().endsWith("/track.js")) asked.push(r.url()); });
  await page.goto(url, { waitUntil: "load" });
  await page.waitForFunction(() => typeof window.enlace === "object");
  await page.waitForTimeout(400);
  const before = { popups: await page.locator("[data-enlace-message]").count(), asked: asked.length };
  await shot(page, `${name}-1-before-consent`);
  await page.evaluate(() => window.enlace.consent(true));
  let after;
  if (expectPopup) {
    await page.waitForSelector("[data-enlace-message=popup]", { timeout: 5000 });
    const box = page.locator("[data-enlace-message=popup]");
    after = {
      popups: await page.locator("[data-enlace-message]").count(),
      title: await box.locator("strong").textContent(),
      role: await box.getAttribute("role"),
      // The page stays usable: its own heading can still be clicked.
      page_usable: await page.locator("h1").isVisible(),
    };
    await shot(page, `${name}-2-popup`);
    await box.getByRole("button", { name: "Close" }).click();
    after.closed = (await page.locator("[data-enlace-message]").count()) === 0;
  } else {
    await page.waitForTimeout(1500);
    after = { popups: await page.locator("[data-enlace-message]").count() };
    await shot(page, `${name}-2-after-consent`);
  }
  after.asked = asked.filter((u) => u.endsWith("/web/messages")).length;
  await page.waitForTimeout(300);
  await page.goto("about:blank");
  await page.waitForTimeout(300);
  g.check();
  await page.close();
  return { before, after };
}

run(async (browser) => {
  const context = await browser.newContext({ viewport: { width: 390, height: 844 } });
  const a = await visit(context, pageA, "popup-a", true);
  await context.clearCookies();
  const ctxB = await browser.newContext({ viewport: { width: 390, height: 844 } });
  const b = await visit(ctxB, pageB, "popup-b", false);
  await context.close();
  await ctxB.close();
  return { a, b };
});
