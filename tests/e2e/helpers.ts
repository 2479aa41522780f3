import { expect, type BrowserContext, type Page } from "@playwright/test";
import { BASE, HOOKS_SECRET, LONG, STORM } from "./playwright.config";

export { BASE, HOOKS_SECRET, LONG, STORM };

/** The server's test hooks, called from Node (not through any page). */
export async function hook(method: string, path: string, body?: unknown, base = BASE): Promise<any> {
  const secret = { "x-test-hooks-secret": HOOKS_SECRET };
  const res = await fetch(base + path, {
    method,
    headers: body === undefined ? secret : { ...secret, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  expect(res.ok, `${method} ${path}: ${res.status}`).toBeTruthy();
  return res.status === 204 ? null : res.json();
}

export const stats = (base = BASE) => hook("GET", "/test/stats", undefined, base);
export const reset = (base = BASE) => hook("POST", "/test/reset", undefined, base);

let users = 0;
/** A fresh account, so tests never share a session. */
export async function newUser(base = BASE) {
  const email = `tab${Date.now()}-${users++}@example.com`;
  const password = "playwright-password";
  await hook("POST", "/test/users", { email, password, name: "Tab User" }, base);
  return { email, password };
}

/** Opens a tab of the harness page with a TokenManager built from `options`. */
export async function openTab(context: BrowserContext, options: object = {}, base = BASE): Promise<Page> {
  const page = await context.newPage();
  await exposeHooksSecret(page);
  await page.goto(base + "/");
  await page.evaluate((o) => (window as any).setup(o), options);
  return page;
}

/** Pages read the hooks' secret (for /test/echo) from `window.TW_TEST_HOOKS_SECRET`. */
export const exposeHooksSecret = (page: Page) =>
  page.addInitScript((s) => ((window as any).TW_TEST_HOOKS_SECRET = s), HOOKS_SECRET);

export const isAuthenticated = (p: Page) => p.evaluate(() => (window as any).auth.isAuthenticated);
export const events = (p: Page) => p.evaluate(() => (window as any).events as string[]);
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Half the 4-second token lifetime, plus a margin: every tab's token is due for refresh. */
export const UNTIL_DUE_MS = 2_200;
/** The same on the STORM server (10-second tokens). */
export const UNTIL_DUE_STORM_MS = 5_200;

const LOGGED_400 = "Failed to load resource: the server responded with a status of 400 (Bad Request)";

/** Collects a page's errors (uncaught, console). DPoP: a page's first request to an auth
 * endpoint has no nonce yet, so the server answers 400 use_dpop_nonce (RFC 9449) and the
 * client sends it once more; Chromium logs that 400. Every 400 must be exactly that, and only
 * as many console lines as there were such answers are forgiven: `check()` asserts the rest. */
export function watchErrors(page: Page) {
  const errors: string[] = [];
  let nonce400s = 0;
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
  page.on("response", async (r) => {
    if (r.status() !== 400) return;
    // The body says so; or, when Chromium no longer has the body, the proof sent had no nonce.
    const body = await r.json().catch(() => null);
    const proof = r.request().headers()["dpop"]?.split(".")[1];
    const claims = proof ? JSON.parse(Buffer.from(proof, "base64url").toString()) : null;
    const challenge = body ? body.error === "use_dpop_nonce" : claims !== null && claims.nonce === undefined;
    if (challenge && new URL(r.url()).pathname.startsWith("/auth/")) nonce400s++;
    else errors.push(`400 ${r.url()} ${JSON.stringify(body)}`);
  });
  return {
    check() {
      expect(errors.filter((e) => e === LOGGED_400).length).toBeLessThanOrEqual(nonce400s);
      expect(errors.filter((e) => e !== LOGGED_400)).toEqual([]);
    },
  };
}
