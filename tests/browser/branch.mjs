// The recipe editor's inner steps, as an editor uses them (run by tests/e2e/ui.rs): sign in;
// open a recipe whose first step is a branch; under the branch's "if" path, add an HTTP
// request with its schema form, the address left out first (the problem shows beside the
// field), then filled in; see the step indented under its path; remove it. Screenshots at
// 1280 and 390 px. Fails on any console error, failed request or HTTP error answer but the
// one save refused for the missing address (422).
//
// Usage: node branch.mjs '<json config>'. Prints one JSON line of observations.
import { mkdirSync } from "node:fs";
import { run, guard, checkIgnoringIconAborts, twoWidths } from "./browser.mjs";

const cfg = JSON.parse(process.argv[2]);
mkdirSync(cfg.shots, { recursive: true });

await run(async (browser) => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, locale: "en-US" });
  const page = await context.newPage();
  const watch = guard(page, (url, status) => status === 422 && /\/ui\/recipes\/vip\/steps$/.test(url));
  const problems = [];
  const out = {};
  const snap = twoWidths(page, cfg.shots, "branch", problems);

  try {
    await page.goto(`${cfg.base}/ui/recipes/vip`);
    await page.getByLabel("User name or email").fill(cfg.user);
    await page.getByLabel("Password", { exact: true }).fill(cfg.password);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.waitForURL(/\/ui\/recipes\/vip/);
    await snap("branch");

    // "Add a step to b · if …": the HTTP request's form, for that path.
    const slot = page.getByLabel("Add a step to b · if {{trigger.body.vip}}");
    await slot.selectOption("http.request");
    await page.locator("li.slot", { has: slot }).getByRole("button", { name: "Add it here" }).click();
    await page.waitForURL(/add=http\.request/);
    out.list = await page.locator('input[name="list"]').inputValue();
    await page.getByLabel("Step id").fill("notify");
    await page.locator('[name="with.method"]').fill("POST");

    // Saved without its address: refused, the problem beside the field.
    await page.getByRole("button", { name: "Save the step" }).click();
    await page.waitForLoadState("load");
    out.url_invalid = await page.locator('[name="with.url"]').getAttribute("aria-invalid");
    out.url_error = (await page.locator("#with-url-err").innerText()).trim();
    await snap("missing-address");

    await page.locator('[name="with.url"]').fill("https://hooks.example.com/vip");
    await page.getByRole("button", { name: "Save the step" }).click();
    await page.waitForURL(/#step-notify$/);
    out.saved = (await page.locator(".flash").first().innerText()).trim();
    out.row_class = await page.locator("#step-notify").getAttribute("class");
    // Inner steps are edited and removed here; tests and real calls take the recipe's own.
    out.inner_test_buttons = await page.locator("#step-notify").getByRole("button", { name: /Test notify/ }).count();
    await snap("inner-step");

    await page.getByRole("button", { name: "Remove the step notify" }).click();
    await page.waitForLoadState("load");
    out.removed = (await page.locator(".flash").first().innerText()).trim();
    out.left = await page.locator("#step-notify").count();
  } catch (e) {
    await page.screenshot({ path: `${cfg.shots}/branch-failed.png`, fullPage: true }).catch(() => {});
    throw new Error(`${e.message}\nobserved so far: ${JSON.stringify(out)}`);
  }
  checkIgnoringIconAborts(watch);
  await context.close();
  out.problems = problems;
  return out;
});
