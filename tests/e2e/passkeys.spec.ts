// Passkeys (issue 25) as a person uses them in the demo page, in real Chromium with its virtual
// authenticator (CDP: resident keys, user verification) against `tokenwarden-server --demo`
// opened as http://localhost (WebAuthn refuses IP addresses as RP IDs): register, sign out,
// sign in with the passkey (the button, then the email field's autofill), step up, a second
// factor after the password (the passkey, the emailed code), a cancelled ceremony, a removed
// passkey. The virtual authenticator answers a conditional (autofill) request at once, as a
// user picking the passkey would; with user verification off it refuses every ceremony, as a
// user cancelling the prompt does.
import { test, expect, type CDPSession, type Page } from "@playwright/test";
import { PASSKEYS } from "./playwright.config";
import { hook } from "./helpers";

const claims = (page: Page) => page.evaluate(() => (window as any).auth.claims());
const authed = (page: Page) => page.evaluate(() => (window as any).auth.isAuthenticated as boolean);
const shot = (page: Page, name: string) =>
  page.screenshot({ path: test.info().outputPath(`${name}.png`), fullPage: true });
/** What `auth[method](...args)` in the page rejected with (name, code, status, maxAge), or "ok". */
const outcome = (page: Page, method: string, ...args: unknown[]) =>
  page.evaluate(
    ([m, a]) =>
      (window as any).auth[m as string](...(a as unknown[])).then(
        () => "ok",
        (e: any) => ({ name: e.name, code: e.code, status: e.status, maxAge: e.maxAge }),
      ),
    [method, args] as const,
  );

let users = 0;
async function newUser() {
  const email = `passkey${Date.now()}-${users++}@example.com`;
  const password = "playwright-password";
  await hook("POST", "/test/users", { email, password, name: "Passkey User" }, PASSKEYS);
  return { email, password };
}

/** A platform authenticator for `page` (resident keys, user verification, presence simulated). */
async function authenticator(page: Page) {
  const cdp: CDPSession = await page.context().newCDPSession(page);
  await cdp.send("WebAuthn.enable");
  const { authenticatorId } = await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: {
      protocol: "ctap2", transport: "internal", hasResidentKey: true, hasUserVerification: true,
      isUserVerified: true, automaticPresenceSimulation: true,
    },
  });
  return {
    credentials: async () => (await cdp.send("WebAuthn.getCredentials", { authenticatorId })).credentials,
    /** Off: every ceremony fails as a user's "Cancel" does (NotAllowedError). */
    verify: (on: boolean) => cdp.send("WebAuthn.setUserVerified", { authenticatorId, isUserVerified: on }),
  };
}

/** The demo page, signed in with `user`'s password; its uncaught errors collected. */
async function signedIn(page: Page, user: { email: string; password: string }) {
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(PASSKEYS);
  await expect(page.locator("#login-card")).toBeVisible();
  await page.fill("#email", user.email);
  await page.fill("#password", user.password);
  await page.click("#login-button");
  await expect(page.locator("#session")).toBeVisible();
  return errors;
}

/** Signs out with user verification off, so that the autofill's request (which the virtual
 * authenticator would answer at once) is cancelled; then turns it on again. */
async function signOutQuietly(page: Page, key: Awaited<ReturnType<typeof authenticator>>) {
  const before = await page.locator("#log li.autofill").count();
  await key.verify(false);
  await page.click("#logout");
  await expect(page.locator("#login-card")).toBeVisible();
  await expect(page.locator("#log li.autofill")).toHaveCount(before + 1);
  await key.verify(true);
}

test("a passkey registered in the demo signs in without a username: the button, then the autofill; the other tab is told; a cancelled prompt is a typed error", async ({ context }) => {
  const user = await newUser();
  const page = await context.newPage();
  const key = await authenticator(page);
  const errors = await signedIn(page, user);
  expect((await claims(page)).amr).toEqual(["pwd"]);

  await page.fill("#passkey-name", "Virtual key");
  await page.click("#passkey-add");
  await expect(page.locator("#passkey-status")).toHaveText("passkey “Virtual key” added");
  await expect(page.locator("#passkeys li")).toHaveCount(1);
  await expect(page.locator("#passkeys li")).toContainText("Virtual key · never used");
  // Discoverable (a resident key), for this RP ID and account.
  const [cred] = await key.credentials();
  expect(cred).toMatchObject({ isResidentCredential: true, rpId: "localhost", userName: user.email });
  await shot(page, "01-passkey-added");

  const tab2 = await context.newPage();
  await tab2.goto(PASSKEYS);
  await expect(tab2.locator("#session")).toBeVisible();

  // Signed out in both; the autofill's request cancelled.
  await signOutQuietly(page, key);
  await expect(tab2.locator("#login-card")).toBeVisible();

  // The user cancels the prompt: a PasskeyError, nothing signed in.
  const autofills = await page.locator("#log li.autofill").count();
  await key.verify(false);
  await page.click("#passkey-login");
  await expect(page.locator("#login-error")).toHaveText("Cancelled (or no passkey for this site on this device).");
  expect(await page.locator("#log").innerText()).toContain("loginWithPasskey: PasskeyError cancelled");
  expect(await authed(page)).toBe(false);
  // The autofill started again after it, and was cancelled too.
  await expect(page.locator("#log li.autofill")).toHaveCount(autofills + 1);
  await key.verify(true);

  // "Sign in with a passkey": no username typed; the other tab is told.
  const finish = page.waitForResponse((r) => r.url().endsWith("/auth/passkeys/login/finish") && r.status() === 200);
  await page.click("#passkey-login");
  await finish;
  await expect(page.locator("#session")).toBeVisible();
  const c = await claims(page);
  expect(c.amr).toEqual(["hwk", "mfa"]);
  expect(c.email).toBe(user.email);
  expect(c.cnf?.jkt).toMatch(/^[A-Za-z0-9_-]{43}$/); // bound to this page's DPoP key
  await expect(tab2.locator("#session")).toBeVisible();
  expect((await claims(tab2)).sid).toBe(c.sid);

  // Signed out with the passkey offered in the autofill: picking it signs in (the virtual
  // authenticator picks at once), no button pressed.
  const logins = await page.locator("#log li.login").count();
  await page.click("#logout");
  await expect(page.locator("#log li.logout")).toHaveCount(2);
  await expect(page.locator("#log li.login")).toHaveCount(logins + 1);
  await expect(page.locator("#session")).toBeVisible();
  const again = await claims(page);
  expect(again.amr).toEqual(["hwk", "mfa"]);
  expect(again.sid).not.toBe(c.sid);
  await expect(tab2.locator("#session")).toBeVisible();
  await expect.poll(async () => (await claims(tab2))?.sid).toBe(again.sid);
  await expect(page.locator("#passkeys li")).toContainText("Virtual key · last used");
  await shot(page, "02-signed-in-by-autofill");
  expect(errors).toEqual([]);
});

test("a sensitive action after an old sign-in asks for a step-up, not a logout; the passkey gives one (hwk in amr); a removed passkey signs nothing in", async ({ page }) => {
  const user = await newUser();
  const key = await authenticator(page);
  const errors = await signedIn(page, user);
  await page.fill("#passkey-name", "Laptop");
  await page.click("#passkey-add");
  await expect(page.locator("#passkeys li")).toContainText("Laptop · never used");
  const [added] = await page.evaluate(() => (window as any).auth.listPasskeys());
  expect(added).toEqual({ id: expect.stringMatching(/^[A-Za-z0-9_-]+$/), name: "Laptop", created_at: expect.any(Number), last_used_at: null });
  // A second one on the same authenticator: refused by the browser (excludeCredentials).
  await page.fill("#passkey-name", "Again");
  await page.click("#passkey-add");
  await expect(page.locator("#passkey-error")).toHaveText("This device has a passkey for the account already.");
  expect(await page.locator("#log").innerText()).toContain("PasskeyError exists");
  await expect(page.locator("#passkeys li")).toContainText("Laptop");

  // An id that is no credential id (`..` would be a dot segment: a DELETE of another path):
  // refused before anything is sent.
  const deletes: string[] = [];
  page.on("request", (r) => { if (r.method() === "DELETE") deletes.push(r.url()); });
  for (const bad of ["..", ".", "a/b", ""]) {
    expect(await outcome(page, "removePasskey", bad), bad).toEqual({ name: "LoginError", code: "not_found" });
  }
  expect(deletes).toEqual([]);

  // Six minutes later the sign-in is no longer recent.
  const { now } = await hook("POST", "/test/clock", { advance_secs: 360 }, PASSKEYS);
  expect(await outcome(page, "removePasskey", added.id)).toEqual({
    name: "LoginError", code: "step_up_required", status: 403, maxAge: 300,
  });
  await page.locator("#passkeys li button").click();
  await expect(page.locator("#step-up-prompt")).toBeVisible();
  await expect(page.locator("#step-up-why")).toHaveText("This needs a sign-in from the last 5 minutes.");
  expect(await authed(page)).toBe(true);

  // The prompt cancelled: a typed error, still signed in, the passkey still there.
  await key.verify(false);
  expect(await outcome(page, "stepUp")).toEqual({ name: "PasskeyError", code: "cancelled" });
  await page.click("#step-up");
  await expect(page.locator("#passkey-error")).toHaveText("Cancelled (or no passkey for this site on this device).");
  expect(await authed(page)).toBe(true);
  expect(await page.evaluate(() => (window as any).auth.listPasskeys().then((l: any[]) => l.length))).toBe(1);
  await key.verify(true);

  // Confirmed: a fresh auth_time and hwk in the token, then the removal the page held back.
  await page.click("#step-up");
  await expect(page.locator("#passkey-status")).toHaveText("passkey “Laptop” removed");
  await expect(page.locator("#step-up-prompt")).toBeHidden();
  const c = await claims(page);
  expect(c.amr).toEqual(["pwd", "hwk", "mfa"]);
  expect(c.auth_time).toBeGreaterThanOrEqual(now);
  await expect(page.locator("#signed-in-how")).toContainText("with pwd, hwk, mfa");
  await expect(page.locator("#passkeys li")).toHaveText("No passkey yet.");
  await shot(page, "03-stepped-up-and-removed");
  // Recent now: the other sensitive actions need no prompt either.
  expect(await outcome(page, "setSecondFactor", false)).toBe("ok");

  // The authenticator still holds it; the server refuses it (the autofill tries it first).
  expect(await key.credentials()).toHaveLength(1);
  await page.click("#logout");
  await expect(page.locator("#login-error")).toHaveText("The server did not accept that passkey.");
  expect(await outcome(page, "loginWithPasskey")).toEqual({
    name: "LoginError", code: "invalid_credentials", status: 401, maxAge: undefined,
  });
  expect(await authed(page)).toBe(false);
  expect(errors).toEqual([]);
});

test("a required second factor: the password alone signs nothing in; the passkey completes it, then the emailed code (a wrong one may be retried); a code sign-in needs the passkey too", async ({ page }) => {
  const user = await newUser();
  const key = await authenticator(page);
  const errors = await signedIn(page, user);
  // Without a passkey or codes the setting could not be kept; the demo sends codes.
  expect(await page.evaluate(() => (window as any).auth.registerPasskey())).toEqual({
    id: expect.stringMatching(/^[A-Za-z0-9_-]+$/), name: "Passkey", created_at: expect.any(Number),
  });
  await page.click("#second-on");
  await expect(page.locator("#passkey-status")).toHaveText("a second factor is now required at sign-in");

  await signOutQuietly(page, key);
  const password = async () => {
    await page.fill("#email", user.email);
    await page.fill("#password", user.password);
    await page.click("#login-button");
    await expect(page.locator("#second-factor")).toBeVisible();
    expect(await authed(page)).toBe(false);
  };
  // The password: no session yet, a passkey or a code asked.
  await password();
  await expect(page.locator("#second-passkey")).toBeVisible();
  await expect(page.locator("#second-code-form")).toBeVisible();
  expect(await page.evaluate(() => document.cookie)).not.toContain("tw_session");
  await shot(page, "04-second-factor-asked");
  await page.click("#second-passkey");
  await expect(page.locator("#session")).toBeVisible();
  expect((await claims(page)).amr).toEqual(["pwd", "hwk", "mfa"]);

  // The emailed code instead (from the demo mailbox); a wrong one first.
  await signOutQuietly(page, key);
  await password();
  await expect(page.locator("#second-mailbox-code")).toHaveText(/^\d{6,8}$/);
  const code = await page.locator("#second-mailbox-code").innerText();
  await page.fill("#second-code", code === "000000" ? "111111" : "000000");
  await page.click("#second-code-button");
  await expect(page.locator("#second-error")).toContainText("Wrong code");
  expect(await authed(page)).toBe(false);
  await page.fill("#second-code", code);
  await page.click("#second-code-button");
  await expect(page.locator("#session")).toBeVisible();
  expect((await claims(page)).amr).toEqual(["pwd", "otp", "mfa"]);

  // A code sign-in proves the mailbox only: the passkey is asked for too (no code offered).
  await signOutQuietly(page, key);
  await page.fill("#email", user.email);
  await page.click("#code-request");
  await expect(page.locator("#code")).toHaveValue(/^\d{6,8}$/);
  await page.click("#code-button");
  await expect(page.locator("#second-factor")).toBeVisible();
  await expect(page.locator("#second-passkey")).toBeVisible();
  await expect(page.locator("#second-code-form")).toBeHidden();
  expect(await authed(page)).toBe(false);
  await page.click("#second-passkey");
  await expect(page.locator("#session")).toBeVisible();
  expect((await claims(page)).amr).toEqual(["otp", "hwk", "mfa"]);
  expect(errors).toEqual([]);
});
