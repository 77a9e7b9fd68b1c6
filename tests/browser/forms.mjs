// The hosted form scenario of tests/e2e/web_channel.rs: node forms.mjs LINK BAD_LINK EXPIRED_LINK
// On a 390px-wide phone viewport: opens the signed link (the form prefilled), ticks "dogs",
// types a phone number without its country code and sends; reads the error (its text, that
// the input is tied to it by aria-describedby and marked invalid, that "dogs" is still
// ticked); corrects the number, ticks the SMS consent and sends; reads the thank-you. Then
// opens a tampered and an expired link and reads their pages. Fails on any console error or
// failed request; saves screenshots (ENLACE_SCREENSHOTS).
import { run, guard, shot } from "./browser.mjs";

const [link, tampered, expired] = process.argv.slice(2);

run(async (browser) => {
  const context = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  const page = await context.newPage();
  // The 422 of the bad submission is the expected answer.
  const g = guard(page, (url, status) => status === 422 && url.includes("/f/interests"));
  await page.goto(link, { waitUntil: "load" });
  const opened = {
    title: await page.locator("h1").textContent(),
    prefilled_phone: await page.locator("#f-phone").inputValue(),
    overflow: await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth),
    labels: await page.evaluate(() => [...document.querySelectorAll("input:not([type=hidden])")].filter((i) => !i.closest(".hp")).every((i) => i.labels && i.labels.length > 0)),
  };
  await shot(page, "form-1-opened");
  await page.getByLabel("Dogs").check();
  await page.getByLabel("Mobile number (optional)").fill("415 555 0123");
  await page.getByRole("button", { name: "Save my answers" }).click();
  await page.waitForSelector(".summary");
  const phone = page.locator("#f-phone");
  const describedBy = await phone.getAttribute("aria-describedby");
  const refused = {
    error: await page.locator("#e-phone").textContent(),
    described_by_error: (describedBy || "").split(" ").includes("e-phone"),
    invalid: await phone.getAttribute("aria-invalid"),
    kept_phone: await phone.inputValue(),
    kept_dogs: await page.getByLabel("Dogs").isChecked(),
    summary_links_to_field: await page.locator(".summary a[href='#f-phone']").count(),
    overflow: await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth),
  };
  await shot(page, "form-2-refused");
  await phone.fill("+1 415 555 0123");
  await page.getByLabel("Yes, text me a reminder on the day of a webinar I am invited to.").check();
  await page.getByRole("button", { name: "Save my answers" }).click();
  await page.waitForSelector("p.ok");
  const thanks = await page.locator("p.ok").textContent();
  await shot(page, "form-3-thanks");
  g.check();

  // Refused links: a clear page each (their 400 and 410 are expected).
  const other = await context.newPage();
  const g2 = guard(other, (url, status) => (status === 400 || status === 410) && url.includes("/f/interests"));
  const r1 = await other.goto(tampered, { waitUntil: "load" });
  const bad = { status: r1.status(), heading: await other.locator("h1").textContent() };
  await shot(other, "form-4-tampered");
  const r2 = await other.goto(expired, { waitUntil: "load" });
  const old = { status: r2.status(), heading: await other.locator("h1").textContent() };
  await shot(other, "form-5-expired");
  g2.check();
  await context.close();
  return { opened, refused, thanks, tampered: bad, expired: old };
});
