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
