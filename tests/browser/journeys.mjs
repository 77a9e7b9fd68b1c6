// The Journeys page, a real test call from the editor, and held runs' Approve / Reject, as
// one person would do them (tests/e2e/ui_journeys.rs prepares the recipes and checks what
// the SMTP server received):
//
//   setup:    first-run setup in the browser (the admin account).
//   journeys: a webhook run of `signup` (emit lead.new) starts `greet` (an email); the page
//             draws the edge, shows the counts, raises them in place after another webhook;
//             keyboard focus reaches the graph's links; disabled recipes only when asked.
//   call:     `hello`'s email step: "Run mail for real…", the confirmation, Cancel (nothing
//             sent), again and confirm (sent); the same confirmation again is refused (409).
//   held:     `blast` is capped at one send an hour: three webhooks, two held; Approve one on
//             its run's page, Reject the other.
//
// Usage: node journeys.mjs '<json config>'. Prints one JSON line of observations.
import { mkdirSync } from "node:fs";
import { run, guard, checkIgnoringIconAborts, twoWidths } from "./browser.mjs";

const cfg = JSON.parse(process.argv[2]);
mkdirSync(cfg.shots, { recursive: true });

await run(async (browser) => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  // The repeated confirmation is answered 409 on purpose.
  const watch = guard(page, (url, status) => status === 409 && url.includes("/steps/mail/call"));
  const out = {};
  const overflow = [];
  const snap = twoWidths(page, cfg.shots, "journeys", overflow);
  const text = async (sel) => (await page.locator(sel).first().innerText()).trim();
  const flash = () => text(".flash");
  const fire = async (path, body) => {
    const r = await fetch(`${cfg.base}/hooks/${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    const j = await r.json();
    if (!j.run_id) throw new Error(`the webhook ${path} answered ${r.status} ${JSON.stringify(j)}`);
    return j.run_id;
  };
  const runStatus = async (id, want) => {
    for (let i = 0; i < 100; i += 1) {
      await page.goto(`${cfg.base}/ui/runs/${id}`);
      const s = await text("#run-status");
      if (want.includes(s)) return s;
      await page.waitForTimeout(100);
    }
    return text("#run-status");
  };
  const sentCount = async () => {
    // What the runs of `hello` and the SMTP server say is checked by the Rust test; here: no
    // result card, no run.
    return page.locator("#call-result").count();
  };

  // setup
  await page.goto(`${cfg.base}/`);
  await page.getByLabel("User name or email").fill(cfg.user);
  await page.getByLabel("Password", { exact: true }).fill(cfg.password);
  await page.getByLabel("Password again").fill(cfg.password);
  await page.getByRole("button", { name: "Create the admin account" }).click();
  await page.waitForURL(/\/ui\/apps/);

  // journeys: one chained run first.
  const first = await fire("signup", { email: "lead1@example.com" });
  await runStatus(first, ["succeeded", "failed"]);
  // The listener's run: wait until greet's email went out (its run succeeded).
  for (let i = 0; i < 100; i += 1) {
    await page.goto(`${cfg.base}/ui/runs?recipe=greet&status=succeeded`);
    if ((await page.locator("tbody tr").count()) >= 1) break;
    await page.waitForTimeout(100);
  }
  await page.getByRole("link", { name: "Journeys" }).click();
  await page.waitForURL(/\/ui\/journeys/);
  out.edges = await page.locator("#journeys-svg path.j-edge").count();
  out.edge_title = await page.locator("#journeys-svg path.j-edge title").first().textContent();
  out.emits_line = await text("#journey-signup .j-emits");
  const count = (key, bucket) => page.locator(`[data-count="${key}"][data-bucket="${bucket}"]`).first().textContent();
  out.announce_passed = await count("signup/announce", "passed");
  out.mail_passed = await count("greet/mail", "passed");
  out.signup_runs = await page.locator('#journeys-svg [data-count="signup/"][data-sum]').textContent();
  out.disabled_hidden = (await page.locator("#journey-hello").count()) === 0;
  await snap("journeys");
  // Live: another webhook; the page's numbers rise without a reload.
  const second = await fire("signup", { email: "lead2@example.com" });
  await page.waitForFunction(
    () => document.querySelector('[data-count="signup/announce"][data-bucket="passed"]').textContent === "2",
    null,
    { timeout: 20000 },
  );
  out.announce_passed_live = await count("signup/announce", "passed");
  out.second = second;
  // Keyboard: the graph's links take the focus, and Enter opens the editor.
  await page.locator("#node-signup a.j-title").focus();
  out.focused_in_svg = await page.evaluate(() => !!document.activeElement.closest("svg") && document.activeElement.tagName.toLowerCase() === "a");
  await page.keyboard.press("Enter");
  await page.waitForURL(/\/ui\/recipes\/signup/);
  out.after_enter = new URL(page.url()).pathname;
  await page.goto(`${cfg.base}/ui/journeys`);
  await page.getByLabel("Disabled recipes too").check();
  await page.getByLabel("Window").selectOption("7d");
  await page.getByRole("button", { name: "Show" }).click();
  await page.waitForURL(/all=1/);
  out.disabled_shown = (await page.locator("#journey-hello").count()) === 1;
  await snap("journeys-all");

  // call: the confirmation, Cancel, then for real.
  await page.goto(`${cfg.base}/ui/recipes/hello`);
  await page.getByRole("button", { name: "Run mail for real…" }).click();
  out.confirm = await text("#call-confirm");
  await snap("call-confirm");
  await page.getByRole("link", { name: "Cancel" }).click();
  await page.waitForURL(/\/ui\/recipes\/hello/);
  out.after_cancel_sent = await sentCount();
  await page.getByRole("button", { name: "Run mail for real…" }).click();
  const key = await page.locator('#call-confirm input[name="call"]').inputValue();
  const csrf = await page.locator('#call-confirm input[name="_csrf"]').inputValue();
  await page.getByRole("button", { name: "Yes, run mail now" }).click();
  out.call_status = await text("#call-status");
  out.call_output = await text("#call-result");
  await snap("call-result");
  // The same confirmation sent again (a double submit) calls nothing.
  const again = await page.request.post(`${cfg.base}/ui/recipes/hello/steps/mail/call`, { form: { _csrf: csrf, confirm: "yes", call: key }, maxRedirects: 0 });
  out.resend_status = again.status();

  // held: the cap lets the first through and holds the next two.
  const b1 = await fire("blast", { email: "b1@example.com" });
  await runStatus(b1, ["succeeded"]);
  const b2 = await fire("blast", { email: "b2@example.com" });
  const b3 = await fire("blast", { email: "b3@example.com" });
  for (const id of [b2, b3]) {
    for (let i = 0; i < 100; i += 1) {
      await page.goto(`${cfg.base}/ui/runs/${id}`);
      if ((await page.locator("#h-held").count()) === 1) break;
      await page.waitForTimeout(100);
    }
  }
  await page.goto(`${cfg.base}/ui/runs/${b2}`);
  await snap("held");
  await page.getByRole("button", { name: "Approve and send" }).click();
  out.approve_flash = await flash();
  out.approved_status = await runStatus(b2, ["succeeded", "failed"]);
  await page.goto(`${cfg.base}/ui/runs/${b3}`);
  await page.getByRole("button", { name: "Reject" }).click();
  out.reject_flash = await flash();
  await snap("rejected");

  await context.close();
  try {
    checkIgnoringIconAborts(watch);
  } catch (e) {
    overflow.push(String(e.message));
  }
  out.problems = overflow;
  return out;
});
