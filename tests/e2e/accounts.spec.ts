// The account flows (issue 20) as a person uses them in the demo page, in real Chromium against
// `tokenwarden-server --demo` mailing its codes to a real SMTP server (aiosmtpd): sign up, read
// the code from the delivered message, land signed in; then reset the password in one browser
// while another is signed in, and the other one's session ends.
import { test, expect, type Page } from "@playwright/test";
import { ACCOUNTS } from "./playwright.config";
import { mailedCode, mailsTo } from "./mail";

const shot = (page: Page, name: string) =>
  page.screenshot({ path: test.info().outputPath(`${name}.png`), fullPage: true });
const claims = (page: Page) => page.evaluate(() => (window as any).auth.claims());
/** Every event the page's TokenManager fired, recorded from now on. */
const record = (page: Page) =>
  page.evaluate(() => {
    const seen: string[] = ((window as any).seen = []);
    for (const e of ["login", "refresh", "sessionExpired", "logout"]) (window as any).auth.on(e, () => seen.push(e));
  });
const seen = (page: Page) => page.evaluate(() => (window as any).seen as string[]);

test("sign up in the demo with the code from the mail, then a reset in one browser ends the session in another", async ({ context, browser }) => {
  const email = `signup-${Date.now()}@example.com`;
  const page = await context.newPage();
  // The page's refusals (a weak password is a 400) are expected; an exception in it is not.
  const jsErrors: string[] = [];
  page.on("pageerror", (e) => jsErrors.push(String(e)));
  await page.goto(ACCOUNTS);
  await expect(page.locator("#login-card")).toBeVisible();

  // A weak password is refused before anything is mailed.
  await page.click("#signup summary");
  await page.fill("#signup-email", email);
  await page.fill("#signup-name", "Grace Hopper");
  await page.fill("#signup-password", "password1");
  await page.click("#signup-button");
  await expect(page.locator("#signup-error")).toContainText("not a common password");
  expect(mailsTo(email)).toHaveLength(0);

  await page.fill("#signup-password", "a fine and long passphrase");
  await page.click("#signup-button");
  await expect(page.locator("#signup-mailbox")).toContainText("Check your inbox");
  const code = await mailedCode(email, 1);
  expect(mailsTo(email)[0]).toContain("Subject: Confirm your address");
  await page.fill("#signup-code", code);
  await shot(page, "accounts-01-signup");
  await page.click("#signup-verify");
  await expect(page.locator("#session")).toBeVisible();
  await expect(page.locator('#profile dd[data-field="email"]')).toHaveText(email);
  const c = await claims(page);
  expect(c.name).toBe("Grace Hopper");
  expect(c.email_verified).toBe(true);
  expect(c.cnf?.jkt, "bound to the page's DPoP key").toBeTruthy();
  await shot(page, "accounts-02-signed-up");

  // Another browser signs in with the new account's password.
  const laptop = await browser.newContext();
  const other = await laptop.newPage();
  await other.goto(ACCOUNTS);
  await other.fill("#email", email);
  await other.fill("#password", "a fine and long passphrase");
  await other.click("#login-button");
  await expect(other.locator("#session")).toBeVisible();
  // Its requests are the test's clicks: the demo's 3-second call could otherwise end the session
  // first and hide the button the test clicks (a click then waits for it forever).
  await other.uncheck("#auto");
  await record(other);

  // This browser forgets the password: it logs out and resets it by a mailed code.
  await page.click("#logout");
  await expect(page.locator("#login-card")).toBeVisible();
  await page.fill("#email", email);
  await page.click("#forgot summary");
  await page.click("#reset-request");
  await expect(page.locator("#reset-mailbox")).toContainText("Check your inbox");
  const resetCode = await mailedCode(email, 2);
  expect(mailsTo(email)[1]).toContain("Subject: Reset your password");
  await page.fill("#reset-code", resetCode);
  await page.fill("#reset-password", "another long passphrase");
  await page.click("#reset-button");
  await expect(page.locator("#session")).toBeVisible();
  await shot(page, "accounts-03-reset");

  // The other browser's session is over: its next request ends it, with sessionExpired.
  await other.click("#call-api");
  await expect(other.locator("#login-card")).toBeVisible({ timeout: 10_000 });
  expect(await seen(other)).toContain("sessionExpired");
  expect(await other.evaluate(() => (window as any).auth.isAuthenticated)).toBe(false);
  // The old password no longer signs in; the new one does.
  await other.fill("#password", "a fine and long passphrase");
  await other.click("#login-button");
  await expect(other.locator("#login-error")).toHaveText("Wrong email or password.");
  await other.fill("#password", "another long passphrase");
  await other.click("#login-button");
  await expect(other.locator("#session")).toBeVisible();

  // Changing the password here signs the other browser out again, and keeps this one.
  await record(other);
  await page.fill("#current-password", "another long passphrase");
  await page.fill("#new-password", "a third long passphrase");
  await page.click("#password-button");
  await expect(page.locator("#log")).toContainText("your other devices are signed out");
  await expect(page.locator("#password-error")).toHaveText("");
  await other.click("#call-api");
  await expect(other.locator("#login-card")).toBeVisible({ timeout: 10_000 });
  expect(await seen(other)).toContain("sessionExpired");
  await page.click("#call-api");
  await expect(page.locator("#session")).toBeVisible();
  expect(await page.evaluate(() => (window as any).auth.isAuthenticated)).toBe(true);
  await shot(page, "accounts-04-changed");
  // The inbox heard of both, as it would of a thief's reset or change.
  const subjects = () => mailsTo(email).slice(2).map((m) => /^Subject: (.*)$/m.exec(m)?.[1].trim());
  await expect.poll(subjects).toEqual(["Your password was reset", "Your password was changed"]);
  await laptop.close();
  expect(jsErrors).toEqual([]);
});
