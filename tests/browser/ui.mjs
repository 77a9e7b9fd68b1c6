// The web UI, walked as a new user would, in phases the Rust test (tests/e2e/ui.rs) runs
// one after the other (it breaks and repairs the SMTP server between them):
//
//   first:  first-run setup; connect SendGrid (an API-key app) and an SMTP server; build
//           webhook -> contacts upsert -> email with data pills; check; preview; enable;
//           send a webhook; see the run succeed.
//   fail:   sign in by keyboard; send a webhook while the SMTP server is down; see the run
//           fail with an explanation in plain words.
//   repair: give the SMTP connection the repaired server; replay the failed run; see it succeed.
//   erase:  find the contact, erase it.
//
// Usage: node ui.mjs '<json config>'. Prints one JSON line of observations. Fails on any
// console error, page error, failed request or unexpected HTTP error answer. Screenshots
// (1280 and 390 px wide) go to config.shots.
import { mkdirSync } from "node:fs";
import { run, twoWidths } from "./browser.mjs";

const cfg = JSON.parse(process.argv[2]);
mkdirSync(cfg.shots, { recursive: true });

await run(async (browser) => {
  const problems = [];
  const expected = new Set(cfg.expect_status || []);
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.on("console", (m) => { if (m.type() === "error") problems.push(`console: ${m.text()}`); });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("requestfailed", (r) => {
    // The browser fetches the page's icon after the page has loaded and cancels it when the
    // test moves to the next page at once: that is our navigation, not a failure. Any answer
    // the icon gets is still checked below.
    if (r.url().endsWith("/ui/static/icon.svg") && r.failure()?.errorText === "net::ERR_ABORTED") return;
    problems.push(`request failed: ${r.method()} ${r.url()} ${r.failure()?.errorText}`);
  });
  page.on("response", (r) => {
    if (r.status() >= 400 && !expected.has(r.status())) problems.push(`HTTP ${r.status()}: ${r.request().method()} ${r.url()}`);
  });
  const out = { phase: cfg.phase };
  // A screenshot at 1280 px, then at 390 px (checking nothing overflows sideways).
  const snap = twoWidths(page, cfg.shots, cfg.phase, problems);
  const text = async (sel) => (await page.locator(sel).first().innerText()).trim();
  const flash = async () => (await page.locator(".flash").first().innerText()).trim();
  const fire = async (body) => {
    // An HTTP client outside the browser, as curl would send it.
    const r = await fetch(`${cfg.base}/hooks/${cfg.hook}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    const j = await r.json();
    if (!j.run_id) throw new Error(`the webhook answered ${r.status} ${JSON.stringify(j)}`);
    return j.run_id;
  };
  // Reloads a run's page until its status is one of `want`.
  const runStatus = async (id, want) => {
    for (let i = 0; i < 100; i += 1) {
      await page.goto(`${cfg.base}/ui/runs/${id}`);
      const s = await text("#run-status");
      if (want.includes(s)) return s;
      await page.waitForTimeout(100);
    }
    return text("#run-status");
  };
  const signIn = async () => {
    await page.goto(`${cfg.base}/ui/runs`);
    out.login_url = new URL(page.url()).pathname + new URL(page.url()).search;
    // By keyboard only: the user name field, Tab to the password, Enter to send.
    await page.locator("#username").focus();
    await page.keyboard.type(cfg.user);
    await page.keyboard.press("Tab");
    await page.keyboard.type(cfg.password);
    await page.keyboard.press("Enter");
    await page.waitForURL(/\/ui\/runs/);
  };

  if (cfg.phase === "first") {
    await page.goto(`${cfg.base}/`);
    out.first_url = new URL(page.url()).pathname;
    await snap("setup");
    await page.getByLabel("User name or email").fill(cfg.user);
    await page.getByLabel("Password", { exact: true }).fill(cfg.password);
    await page.getByLabel("Password again").fill(cfg.password);
    await page.getByRole("button", { name: "Create the admin account" }).click();
    await page.waitForURL(/\/ui\/apps/);
    out.welcome = await flash();

    // The catalog, searched; SendGrid connected with its API key (tested at once).
    await page.getByLabel("Search apps").fill("sendgrid");
    out.apps_visible = await page.locator("#app-list > li:visible").count();
    await snap("apps");
    await page.getByRole("link", { name: "Connect SendGrid" }).click();
    await page.getByLabel("Connection id").fill("sendgrid-main");
    await page.getByLabel("Token").fill(cfg.sendgrid_key);
    await snap("connect-sendgrid");
    await page.getByRole("button", { name: "Save and test" }).click();
    await page.waitForURL(/\/ui\/connections\/sendgrid-main/);
    out.sendgrid_flash = await flash();
    out.sendgrid_health = await text("#health");

    // The SMTP server, from the form generated from its credential fields.
    await page.goto(`${cfg.base}/ui/apps/smtp/connect`);
    await page.getByLabel("Connection id").fill("smtp-main");
    await page.getByLabel("Host").fill("localhost");
    await page.getByLabel("Port").fill(String(cfg.smtp.port));
    await page.getByLabel("Username").fill(cfg.smtp.user);
    await page.getByLabel("Password").fill(cfg.smtp.password);
    await page.getByLabel("Tls").fill("starttls");
    await page.getByLabel("Ca certificate").fill(cfg.smtp.ca_pem);
    await page.getByRole("button", { name: "Save and test" }).click();
    await page.waitForURL(/\/ui\/connections\/smtp-main/);
    out.smtp_health = await text("#health");
    await snap("connection");

    // The recipe: the step editor builds webhook -> contacts upsert -> email.
    await page.goto(`${cfg.base}/ui/recipes/new`);
    await page.getByLabel("Recipe id").fill(cfg.hook);
    await page.getByLabel("Recipe name").fill("Welcome email");
    await page.getByLabel("Trigger", { exact: true }).selectOption("webhook.catch");
    await page.getByRole("button", { name: "Create", exact: true }).click();
    await page.waitForURL(new RegExp(`/ui/recipes/${cfg.hook}`));
    out.hook_url = await text("#hook-url");
    // The webhook's sample request: the editor listens, a request comes, its fields become pills.
    await page.getByRole("button", { name: "Listen for a sample request" }).click();
    out.listening = await text("#listening");
    const caught = await fetch(out.hook_url.startsWith("http") ? out.hook_url : `${cfg.base}${out.hook_url}`, {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ email: "ana@example.com", name: "Ana" }),
    });
    out.sample_status = caught.status;
    await page.reload();

    // Step 1: contacts upsert, with a pill for the email.
    await page.getByLabel("Add a step").selectOption("contacts.upsert_contact");
    await page.getByRole("button", { name: "Add the step" }).click();
    out.sample_pills = await page.locator("button.pill").allInnerTexts();
    await page.getByLabel("Step id").fill("save");
    await page.getByLabel("email", { exact: true }).click();
    await page.getByRole("button", { name: "trigger.body.email" }).first().click();
    out.pill_inserted = await page.getByLabel("email", { exact: true }).inputValue();
    await page.getByRole("button", { name: "Save the step" }).click();
    out.after_step1 = await flash();

    // Step 2: the email, its fields from the action's schema, pills from the trigger and step 1.
    await page.getByLabel("Add a step").selectOption("smtp.send_email");
    await page.getByRole("button", { name: "Add the step" }).click();
    await page.getByLabel("Step id").fill("mail");
    await page.getByLabel("Connection", { exact: true }).selectOption("smtp-main");
    await page.getByLabel("Transactional").check();
    await page.getByLabel("Retry attempts").fill("1");
    await page.getByLabel("from", { exact: true }).fill("news@example.com");
    await page.getByLabel("to", { exact: true }).click();
    await page.getByRole("button", { name: "steps.save.contact.email" }).first().click();
    await page.getByLabel("subject", { exact: true }).fill("Welcome, ");
    await page.getByLabel("subject", { exact: true }).focus();
    await page.getByRole("button", { name: "trigger.body.name" }).first().click();
    await page.getByLabel("text", { exact: true }).fill("Hello from Enlace.");
    out.help_text = await page.locator("#with-subject-help").innerText();
    await snap("step-editor");
    await page.getByRole("button", { name: "Save the step" }).click();
    out.after_step2 = await flash();
    out.steps = await page.locator("#recipe-steps .step h3").allInnerTexts();
    await page.getByRole("button", { name: "Publish the draft" }).click();
    out.published = await flash();

    // Test the email step as a dry run: nothing is sent.
    await page.getByRole("button", { name: "Test mail (dry run)" }).click();
    out.test_step = await text("#test-result");

    // Preview, then enable: the button shows the number.
    await page.getByLabel("Sample request body (JSON)").fill(JSON.stringify({ email: "bo@example.com", name: "Bo" }));
    await page.getByRole("button", { name: "Preview", exact: true }).click();
    out.preview_sent = await text("#preview-sent");
    out.enable_label = await text("#enable");
    await snap("preview");
    await page.locator("#enable").click();
    out.enabled_flash = await flash();
    out.state = await text("#recipe-state");

    // A webhook, from outside the browser; the run succeeds.
    out.run_id = await fire({ email: "ana@example.com", name: "Ana" });
    out.run_status = await runStatus(out.run_id, ["succeeded", "failed"]);
    out.run_steps = await page.locator(".steps .step h3").allInnerTexts();
    await snap("run-succeeded");
    await page.goto(`${cfg.base}/ui/runs?status=succeeded&recipe=${cfg.hook}`);
    out.listed = await page.locator("tbody tr").count();
    await snap("runs");
  }

  if (cfg.phase === "fail") {
    await signIn();
    out.run_id = await fire({ email: "ana@example.com", name: "Ana" });
    out.run_status = await runStatus(out.run_id, ["failed", "succeeded"]);
    out.what = await text(".explain .what");
    out.todo = await text(".explain");
    await snap("run-failed");
  }

  if (cfg.phase === "repair") {
    await signIn();
    await page.goto(`${cfg.base}/ui/connections/smtp-main`);
    await page.getByLabel("Host").fill("localhost");
    await page.getByLabel("Port").fill(String(cfg.smtp.port));
    await page.getByLabel("Username").fill(cfg.smtp.user);
    await page.getByLabel("Password").fill(cfg.smtp.password);
    await page.getByLabel("Tls").fill("starttls");
    await page.getByLabel("Ca certificate").fill(cfg.smtp.ca_pem);
    await page.getByRole("button", { name: /Save the credentials|Reconnect/ }).click();
    out.repair_flash = await flash();
    out.health = await text("#health");
    await page.goto(`${cfg.base}/ui/runs/${cfg.failed_run}`);
    await page.getByRole("button", { name: "Replay from the failed step" }).click();
    out.replay_flash = await flash();
    out.run_status = await runStatus(cfg.failed_run, ["succeeded"]);
    await snap("replayed");
  }

  if (cfg.phase === "erase") {
    await signIn();
    await page.goto(`${cfg.base}/ui/contacts`);
    await page.getByLabel("Email", { exact: true }).fill("ana@example.com");
    await page.getByRole("button", { name: "Search", exact: true }).click();
    await page.getByRole("link", { name: "ana@example.com" }).click();
    out.score_line = await text("main p");
    await snap("contact");
    await page.getByLabel(/I understand/).check();
    await page.getByRole("button", { name: "Erase the contact" }).click();
    out.erased_flash = await flash();
    await page.getByLabel("Email", { exact: true }).fill("ana@example.com");
    await page.getByRole("button", { name: "Search", exact: true }).click();
    out.after = await text("main > p");
    await snap("erased");
  }

  await context.close();
  out.problems = problems;
  return out;
});
