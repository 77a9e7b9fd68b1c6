// The social calendar, as an editor uses it (run by tests/e2e/ui.rs): sign in; add a
// Mastodon channel and a queue slot; compose a post with live per-network previews (too
// long, then fitting); schedule it on a day; see it there; drag it with the mouse to another
// day (it keeps its time of day) and see it stay there after a reload; reschedule a second
// post by keyboard; cancel that post in another tab and drag its stale chip: the error is
// shown and the chip goes back; the week view with the queue slots, where a post dropped on
// an hour takes that hour. Screenshots at 1280 and
// 390 px. Fails on any console error, failed request or HTTP error answer but the one
// refused drag.
//
// Usage: node calendar.mjs '<json config>'. Prints one JSON line of observations.
import { mkdirSync } from "node:fs";
import { run, guard, checkIgnoringIconAborts, twoWidths } from "./browser.mjs";

const cfg = JSON.parse(process.argv[2]);
mkdirSync(cfg.shots, { recursive: true });

await run(async (browser) => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, locale: "en-US" });
  const page = await context.newPage();
  // The one error answer expected: the drag of a post cancelled meanwhile (409).
  const watch = guard(page, (url, status) => status === 409 && /\/ui\/social\/posts\/[^/]+\/schedule$/.test(url));
  const problems = [];
  const out = {};
  const snap = twoWidths(page, cfg.shots, "calendar", problems);
  const flash = async () => (await page.locator(".flash").first().innerText()).trim();
  const cal = `${cfg.base}/ui/social?view=month&date=${cfg.day1}&tz=${encodeURIComponent(cfg.tz)}`;
  const chipIn = (date, text) => page.locator(`.cal-day[data-date="${date}"] li.chip`, { hasText: text });

  try {
  // Sign in; the calendar is in the navigation.
  await page.goto(`${cfg.base}/ui/social`);
  await page.getByLabel("User name or email").fill(cfg.user);
  await page.getByLabel("Password", { exact: true }).fill(cfg.password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(/\/ui\/social/);
  out.nav = await page.locator('nav[aria-label="Main"] a[aria-current="page"]').innerText();

  // A channel on the Mastodon connection, its slots in New York time.
  await page.goto(cal);
  await page.getByLabel("Channel name").fill(cfg.channel);
  await page.getByLabel("Network", { exact: true }).selectOption("mastodon");
  await page.getByLabel("Connection", { exact: true }).selectOption(cfg.connection);
  await page.getByLabel("Time zone of its queue slots").fill("America/New_York");
  await page.getByRole("button", { name: "Add the channel" }).click();
  out.channel_flash = await flash();
  await page.getByLabel("Time (America/New_York)").fill("09:00");
  for (const d of ["mon", "tue", "wed", "thu", "fri"]) await page.getByLabel(d, { exact: true }).check();
  await page.getByRole("button", { name: "Add the slot" }).click();
  out.slot_flash = await flash();
  out.slots = await page.locator(".channel .slots li").allInnerTexts();

  // Compose: the preview counts in Mastodon's unit and says what to cut, live.
  await page.getByLabel(`${cfg.channel} (mastodon`).check();
  await page.getByLabel("Text", { exact: true }).fill("é".repeat(510));
  const preview = page.locator(`#previews .preview[data-network="mastodon"]`);
  await preview.locator(".preview-problems").waitFor();
  out.too_long = (await preview.innerText()).trim();
  await snap("compose-too-long");
  await page.getByLabel("Text", { exact: true }).fill(cfg.text);
  await page.getByLabel("Link", { exact: true }).fill("https://example.com/launch");
  await page.locator('#previews .preview.fits[data-network="mastodon"]').waitFor();
  out.fits = await page.locator("#previews .preview .preview-count").innerText();
  out.preview_text = await page.locator("#previews .preview .preview-text").innerText();
  await page.getByLabel(`Schedule at (${cfg.tz})`).fill(`${cfg.day1}T${cfg.time}`);
  await page.getByRole("button", { name: "Schedule at this time" }).click();
  out.scheduled_flash = await flash();
  await chipIn(cfg.day1, cfg.text.slice(0, 10)).waitFor();
  out.chip_day1 = (await chipIn(cfg.day1, cfg.text.slice(0, 10)).innerText()).trim();
  await snap("scheduled");

  // A second post, rescheduled by keyboard from its panel.
  await page.goto(cal);
  await page.getByLabel(`${cfg.channel} (mastodon`).check();
  await page.getByLabel("Text", { exact: true }).fill(cfg.text2);
  await page.getByLabel(`Schedule at (${cfg.tz})`).fill(`${cfg.day1}T12:00`);
  await page.getByRole("button", { name: "Schedule at this time" }).click();
  await page.waitForURL(/post=/);
  await page.getByLabel(`Reschedule to (${cfg.tz})`).fill(`${cfg.day1}T12:45`);
  // Enter in the field sends its form (the button next to it does the same).
  await page.getByLabel(`Reschedule to (${cfg.tz})`).press("Enter");
  await page.waitForLoadState();
  out.keyboard_flash = await flash();
  out.chip2 = (await chipIn(cfg.day1, cfg.text2).innerText()).trim();

  // Drag the first post to another day with the mouse.
  await page.goto(cal);
  const chip = chipIn(cfg.day1, cfg.text.slice(0, 10));
  const from = await chip.locator(".chip-time").boundingBox();
  const to = await page.locator(`.cal-day[data-date="${cfg.day2}"]`).boundingBox();
  await page.mouse.move(from.x + from.width / 2, from.y + from.height / 2);
  await page.mouse.down();
  await page.mouse.move(to.x + to.width / 2, to.y + to.height / 2, { steps: 12 });
  await page.mouse.up();
  await page.locator("#cal-live", { hasText: "Rescheduled" }).waitFor({ state: "attached" });
  out.drag_live = await page.locator("#cal-live").innerText();
  out.after_drag_day2 = await chipIn(cfg.day2, cfg.text.slice(0, 10)).count();
  // Through the API (outside the browser, with an API token): the time it has now.
  const postId = await chipIn(cfg.day2, cfg.text.slice(0, 10)).getAttribute("data-post");
  const api = await fetch(`${cfg.base}/api/v1/social/posts/${postId}`, { headers: { authorization: `Bearer ${cfg.api_token}` } });
  out.after_drag_api = (await api.json()).targets.map((t) => t.scheduled_at);
  await page.reload();
  out.after_reload_day1 = await chipIn(cfg.day1, cfg.text.slice(0, 10)).count();
  out.after_reload_day2 = (await chipIn(cfg.day2, cfg.text.slice(0, 10)).innerText()).trim();
  await snap("dragged");

  // The second post is cancelled in another tab; dragging its stale chip is refused, said, undone.
  const other = await context.newPage();
  const otherWatch = guard(other);
  await other.goto(cal);
  await other.locator(`.cal-day[data-date="${cfg.day1}"] li.chip a.chip-text`, { hasText: cfg.text2 }).click();
  await other.getByRole("button", { name: "Cancel the post" }).click();
  out.cancel_flash = (await other.locator(".flash").first().innerText()).trim();
  checkIgnoringIconAborts(otherWatch);
  await other.close();
  const stale = chipIn(cfg.day1, cfg.text2);
  const a = await stale.locator(".chip-time").boundingBox();
  const b = await page.locator(`.cal-day[data-date="${cfg.day3}"]`).boundingBox();
  await page.mouse.move(a.x + a.width / 2, a.y + a.height / 2);
  await page.mouse.down();
  await page.mouse.move(b.x + b.width / 2, b.y + b.height / 2, { steps: 12 });
  await page.mouse.up();
  await page.locator("#cal-error:not([hidden])").waitFor();
  out.refused = await page.locator("#cal-error").innerText();
  out.stale_back_day1 = await chipIn(cfg.day1, cfg.text2).count();
  out.stale_day3 = await chipIn(cfg.day3, cfg.text2).count();
  await snap("refused");

  // The week of the new day: the post in its hour, the queue slots as markers.
  await page.goto(`${cfg.base}/ui/social?view=week&date=${cfg.day2}&tz=${encodeURIComponent(cfg.tz)}`);
  out.week_chip_hour = await page.locator(`.cal-hour[data-date="${cfg.day2}"]`, { has: page.locator("li.chip") }).getAttribute("data-time");
  out.week_slots = await page.locator(".slot-marker").count();
  out.week_slot_hour = await page.locator(".cal-hour", { has: page.locator(".slot-marker") }).first().getAttribute("data-time");
  await snap("week");
  // In the week view a post dropped on an hour takes that hour.
  // (The hours between in the middle of the window, so both ends of the drag are on screen.)
  await page.locator(`.cal-hour[data-date="${cfg.day2}"][data-time="13:00"]`).scrollIntoViewIfNeeded();
  const wchip = page.locator(`.cal-hour[data-date="${cfg.day2}"] li.chip`, { hasText: cfg.text.slice(0, 10) });
  const wa = await wchip.locator(".chip-time").boundingBox();
  const wb = await page.locator(`.cal-hour[data-date="${cfg.day2}"][data-time="16:00"]`).boundingBox();
  await page.mouse.move(wa.x + wa.width / 2, wa.y + wa.height / 2);
  await page.mouse.down();
  await page.mouse.move(wb.x + wb.width / 2, wb.y + wb.height / 2, { steps: 12 });
  await page.mouse.up();
  await page.locator("#cal-live", { hasText: "16:00" }).waitFor({ state: "attached" });
  out.week_drag_live = await page.locator("#cal-live").innerText();
  out.week_chip_16 = (await page.locator(`.cal-hour[data-date="${cfg.day2}"][data-time="16:00"] li.chip`).innerText()).trim();

  } catch (e) {
    // Where it stopped, for whoever reads the failure.
    await page.screenshot({ path: `${cfg.shots}/calendar-failed.png`, fullPage: true }).catch(() => {});
    throw new Error(`${e.message}\nobserved so far: ${JSON.stringify(out)}`);
  }
  checkIgnoringIconAborts(watch);
  await context.close();
  out.problems = problems;
  return out;
});
