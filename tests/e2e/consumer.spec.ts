// The npm package as users get it: `npm pack` tarball installed into a Vite 7 + TypeScript app
// (tests/consumer, built by tests/consumer/build.sh), served by the reference server.
import { test, expect } from "@playwright/test";
import { CONSUMER, HOOKS_SECRET } from "./playwright.config";

const stats = async () =>
  (await fetch(`${CONSUMER}/test/stats`, { headers: { "x-test-hooks-secret": HOOKS_SECRET } })).json();
const DEMO_USER = ["demo@tokenwarden.dev", "correct horse battery staple"] as const;

test("a Vite app built from the tarball: login, authenticated fetch, expiry and refresh, axios", async ({ page }) => {
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.addInitScript((s) => ((window as any).TW_TEST_HOOKS_SECRET = s), HOOKS_SECRET);
  await page.goto(CONSUMER);
  await expect(page.locator("#status")).toHaveText("ready");

  const c = (fn: string, ...args: unknown[]) =>
    page.evaluate(([fn, args]) => (window as any).consumer[fn as string](...(args as unknown[])), [fn, args] as const);

  expect(await c("login", DEMO_USER[0], "wrong password")).toBe("LoginError:invalid_credentials");
  // Sign-in by code through the typed API (a --demo server: the code goes to its demo mailbox).
  expect(await c("codeLogin", DEMO_USER[0], "000000")).toMatch(/^LoginError:invalid_code:[012]$/);
  expect(await c("login", ...DEMO_USER)).toBeNull();
  expect((await c("me")).email).toBe(DEMO_USER[0]);
  expect((await c("claims")).email).toBe(DEMO_USER[0]);
  // tokenwarden/passkeys made it into the bundle; this page is on 127.0.0.1, which WebAuthn
  // refuses as an RP ID: the browser's SecurityError is a typed PasskeyError.
  expect(await c("passkey")).toBe("PasskeyError:unsupported");

  // Expiry: the 4-second token is due after 2 s; the next request refreshes first.
  const before = (await stats()).refresh_rotated;
  await page.waitForTimeout(2_200);
  expect((await c("me")).email).toBe(DEMO_USER[0]);
  expect((await stats()).refresh_rotated - before).toBe(1);
  expect((await c("refreshes")).length).toBe(1);

  // axios ≥ 1.7 with its fetch adapter, through auth.install(): the migration path.
  const echo = await c("axiosEcho");
  expect(echo.authorization).toMatch(/^DPoP ey/);
  expect((await c("axiosMe")).email).toBe(DEMO_USER[0]);
  // uninstall() put the browser's fetch back: a plain fetch carries no token.
  const plain = await page.evaluate(
    async (s) => (await fetch("/test/echo", { headers: { "x-test-hooks-secret": s } })).json(),
    HOOKS_SECRET,
  );
  expect(plain.authorization).toBeNull();

  expect(errors).toEqual([]);
});
