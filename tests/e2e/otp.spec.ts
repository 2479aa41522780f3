// Sign-in with an emailed code (issue 13), in real Chromium against the real server, which
// mails the code over SMTP to a real SMTP server (aiosmtpd, started by playwright.config.ts);
// the test reads the code from the delivered message, as a person reads their inbox.
import { test, expect, type Page } from "@playwright/test";
import { OTP } from "./playwright.config";
import { events, isAuthenticated, newUser, openTab, sleep } from "./helpers";
import { mailedCode, mailsTo } from "./mail";

/** Runs `auth.<method>(arg)` in the page: "ok", or the error's typed fields. */
const call = (page: Page, method: string, arg: object) =>
  page.evaluate(([m, a]) => (window as any).auth[m](a).then(
    () => "ok",
    (e: any) => ({ name: e.name, code: e.code, attemptsLeft: e.attemptsLeft, retryAfter: e.retryAfter })),
  [method, arg] as const);

test("a code read from the SMTP server signs in in Chromium: the session works, is listed, and is the other tabs' too", async ({ context }) => {
  const { email } = await newUser(OTP);
  const page = await openTab(context, {}, OTP);
  const second = await openTab(context, {}, OTP);

  expect(await call(page, "requestCode", { email })).toBe("ok");
  const code = await mailedCode(email, 1);

  // A wrong code: a typed refusal, and the page stays logged out.
  const wrong = String((Number(code) + 1) % 1e6).padStart(6, "0");
  expect(await call(page, "loginWithCode", { email, code: wrong }))
    .toEqual({ name: "LoginError", code: "invalid_code", attemptsLeft: 2 });
  expect(await isAuthenticated(page)).toBe(false);

  expect(await call(page, "loginWithCode", { email, code })).toBe("ok");
  expect(await isAuthenticated(page)).toBe(true);
  expect(await events(page)).toEqual(["login"]);
  // Like a password login: a DPoP-bound token, and the other tab is logged in too.
  const claims = await page.evaluate(() => (window as any).auth.claims());
  expect(claims.email).toBe(email);
  expect(claims.cnf?.jkt).toBeTruthy();
  await expect.poll(() => isAuthenticated(second)).toBe(true);
  expect(await events(second)).toEqual(["login"]);

  // The session works and is listed in /auth/sessions, as the current one.
  const me = await page.evaluate(() => (window as any).auth.fetch("/api/me").then((r: Response) => r.json()));
  expect(me.email).toBe(email);
  const sessions = await page.evaluate(() =>
    (window as any).auth.fetch("/auth/sessions").then((r: Response) => r.json()));
  expect(sessions.sessions).toHaveLength(1);
  expect(sessions.sessions[0].id).toBe(claims.sid);
  expect(sessions.sessions[0].current).toBe(true);
  // It rotates like any session.
  await page.evaluate(() => (window as any).auth.refresh({ force: true }));
  expect(await page.evaluate(() => (window as any).auth.fetch("/api/me").then((r: Response) => r.status))).toBe(200);

  // The code is spent.
  expect(await call(second, "loginWithCode", { email, code }))
    .toEqual({ name: "LoginError", code: "invalid_code", attemptsLeft: 0 });
});

test("requestCode and loginWithCode reject with typed errors: bad arguments, the send limit", async ({ context }) => {
  const page = await openTab(context, {}, OTP);
  const email = `nobody-${Date.now()}@example.com`;
  expect(await call(page, "loginWithCode", { email })).toMatchObject({ name: "ConfigError" });
  expect(await call(page, "requestCode", {})).toMatchObject({ name: "ConfigError" });
  // Five codes an hour per address, known or not; the sixth: 429 with Retry-After.
  for (let i = 0; i < 5; i++) expect(await call(page, "requestCode", { email })).toBe("ok");
  const limited = (await call(page, "requestCode", { email })) as any;
  expect(limited).toMatchObject({ name: "LoginError", code: "too_many_attempts" });
  expect(limited.retryAfter).toBeGreaterThan(0);
  // No account, no message.
  await sleep(300);
  expect(mailsTo(email)).toHaveLength(0);
});
