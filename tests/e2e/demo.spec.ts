// The demo page as a person uses it, in real Chromium against `tokenwarden-server --demo`.
// Screenshots of each state are saved in the test output directory.
import { test, expect, type Page } from "@playwright/test";
import { DEMO, HOOKS_SECRET } from "./playwright.config";
import { watchErrors } from "./helpers";

const stats = async () =>
  (await fetch(`${DEMO}/test/stats`, { headers: { "x-test-hooks-secret": HOOKS_SECRET } })).json();
const shot = (page: Page, name: string) =>
  page.screenshot({ path: test.info().outputPath(`${name}.png`), fullPage: true });
const logText = (page: Page) => page.locator("#log").innerText();

test("the demo: login, countdown and refresh, profile update, sessions, second tab, logout", async ({ context }) => {
  const page = await context.newPage();
  const errors = watchErrors(page);

  await page.goto(DEMO);
  await expect(page.locator("#login-card")).toBeVisible();
  await expect(page.locator("#email")).toHaveValue("demo@tokenwarden.dev");
  await shot(page, "01-login");

  await page.click("#login-button");
  await expect(page.locator("#session")).toBeVisible();
  await expect(page.locator('#profile dd[data-field="email"]')).toHaveText("demo@tokenwarden.dev");
  await expect(page.locator("#remaining")).not.toHaveText("–");
  await shot(page, "02-logged-in");

  // The token lives 4 s here: the refresh shows in the log without anyone asking.
  await expect(page.locator("#log li.refresh").first()).toBeVisible({ timeout: 10_000 });
  await shot(page, "03-refreshed");

  // Update the profile, then the forced refresh brings the new name into the token.
  await page.fill("#name", "Ada Lovelace");
  await page.fill("#phone", "+44 20 7946 0000");
  await page.click("#profile-form button");
  await expect(page.locator("#log")).toContainText("name in token: Ada Lovelace");
  await expect(page.locator('#profile dd[data-field="name"]')).toHaveText("Ada Lovelace");
  expect(await page.evaluate(() => (window as any).auth.claims().name)).toBe("Ada Lovelace");
  await shot(page, "04-profile-updated");

  // Another device logs in; this page revokes it.
  const other = await context.browser()!.newContext();
  const device = await other.newPage();
  await device.goto(DEMO);
  await device.click("#login-button");
  await expect(device.locator("#session")).toBeVisible();
  await page.reload(); // restores the session and lists both devices
  await expect(page.locator("#sessions li")).toHaveCount(2);
  await page.locator("#sessions li button").click();
  await expect(page.locator("#sessions li")).toHaveCount(1);
  await shot(page, "05-sessions");
  // The revoked device is logged out at its next request.
  await device.click("#call-api");
  await expect(device.locator("#login-card")).toBeVisible({ timeout: 10_000 });
  await other.close();

  // A second tab: gets the token from the first, without a refresh request.
  const before = (await stats()).refresh_rotated;
  const tab2 = await context.newPage();
  await tab2.goto(DEMO);
  await expect(tab2.locator("#session")).toBeVisible();
  expect(await tab2.locator("#log").innerText()).toContain("session restored");
  expect((await stats()).refresh_rotated - before).toBeLessThanOrEqual(1); // 0 unless the token was due
  await shot(tab2, "06-second-tab");

  // Nothing in storage but the non-secret hint cookie.
  const storage = await page.evaluate(async () => ({
    local: localStorage.length,
    session: sessionStorage.length,
    cookie: document.cookie,
    idb: (await indexedDB.databases()).length,
  }));
  // IndexedDB: one database, the DPoP key's (a non-extractable CryptoKey, no token).
  expect(storage).toEqual({ local: 0, session: 0, cookie: "tw_session=1", idb: 1 });

  // Logout in one tab logs out both.
  await page.click("#logout");
  await expect(page.locator("#login-card")).toBeVisible();
  await expect(tab2.locator("#login-card")).toBeVisible();
  expect(await logText(tab2)).toContain("logout");
  await shot(page, "07-logged-out");

  errors.check();
});

test("the demo: sign in with an emailed code from the demo mailbox, with no SMTP server", async ({ page }) => {
  await page.goto(DEMO);
  await expect(page.locator("#login-card")).toBeVisible();
  await page.click("#code-request");
  const shown = page.locator("#mailbox-code");
  await expect(shown).toHaveText(/^\d{6}$/);
  const code = await shown.innerText();
  await expect(page.locator("#code")).toHaveValue(code);
  await shot(page, "otp-01-demo-mailbox");

  // A wrong code first: the typed error, in words.
  await page.fill("#code", String((Number(code) + 1) % 1e6).padStart(6, "0"));
  await page.click("#code-button");
  await expect(page.locator("#code-error")).toHaveText("Wrong code: 2 tries left.");
  await page.fill("#code", code);
  await page.click("#code-button");
  await expect(page.locator("#session")).toBeVisible();
  await expect(page.locator('#profile dd[data-field="email"]')).toHaveText("demo@tokenwarden.dev");
  await expect(page.locator("#sessions li em")).toHaveText("this browser");
  await shot(page, "otp-02-signed-in");
  await page.click("#logout");
  await expect(page.locator("#login-card")).toBeVisible();

  // An address without an account: the same answer, and nothing arrives.
  await page.fill("#email", "nobody@example.com");
  await page.click("#code-request");
  await expect(page.locator("#mailbox")).toContainText("nothing arrived", { timeout: 10_000 });
});
