// Sign-in with an OpenID Connect provider, as a person does it in the demo: the button, the
// provider's own login and consent pages (panva's oidc-provider, tests/oidc/provider.mjs),
// back signed in and DPoP-bound; then the provider's logout ends every tab (back-channel).
import { expect, test, type Page } from "@playwright/test";
import { IDP, OIDC_DEMO } from "./playwright.config";

const shot = (page: Page, name: string) =>
  page.screenshot({ path: test.info().outputPath(`${name}.png`), fullPage: true });

/** Through the provider's pages: its login form (any name), then its consent form. */
async function atTheProvider(page: Page, login: string) {
  await page.waitForURL((u) => u.href.startsWith(IDP));
  await page.fill('input[name="login"]', login);
  await page.fill('input[name="password"]', "any password");
  await shot(page, "02-provider-login");
  await page.click('button[type="submit"]');
  // Consent (first sign-in of this account to this client).
  await page.waitForURL((u) => !u.href.startsWith(IDP) || u.pathname.includes("interaction"));
  if (page.url().startsWith(IDP)) {
    await shot(page, "03-provider-consent");
    await page.click('button[type="submit"]');
  }
  await page.waitForURL((u) => u.href.startsWith(OIDC_DEMO));
}

test("sign in with the provider in the demo: bound to the page's key, and the provider's logout ends every tab", async ({ context }) => {
  // Two sites, three pages and a logout through the provider: slow on a loaded 2-core machine.
  test.setTimeout(240_000);
  const page = await context.newPage();
  await page.goto(OIDC_DEMO);
  const button = page.getByRole("button", { name: /Sign in with idp/ });
  await expect(button).toBeVisible();
  await shot(page, "01-demo");
  await button.click();
  await atTheProvider(page, "hannah");

  await expect(page.locator("#session")).toBeVisible();
  await expect(page.locator('#profile dd[data-field="email"]')).toHaveText("hannah@idp.test");
  await shot(page, "04-signed-in");
  const claims = await page.evaluate(() => (window as any).auth.claims());
  expect(claims.email_verified).toBe(true);
  expect(claims.cnf?.jkt).toMatch(/^[A-Za-z0-9_-]{43}$/);
  // An API call from the page: DPoP-bound.
  const sent = page.waitForRequest((r) => r.url().endsWith("/api/me"));
  await page.click("#call-api");
  expect((await (await sent).allHeaders()).authorization).toMatch(/^DPoP /);

  // The copied cookie alone refreshes nothing (no proof by the page's key).
  const cookie = (await context.cookies(OIDC_DEMO)).find((c) => c.name === "__Host-tw_refresh");
  expect(cookie).toBeTruthy();
  const stolen = await fetch(`${OIDC_DEMO}/auth/refresh`, {
    method: "POST",
    headers: { cookie: `__Host-tw_refresh=${cookie!.value}`, "x-tokenwarden": "1" },
  });
  expect(stolen.status).toBe(401);

  // A second tab of the same browser has the session too.
  const tab2 = await context.newPage();
  await tab2.goto(OIDC_DEMO);
  await expect(tab2.locator("#session")).toBeVisible();

  // The user signs out at the provider: its logout token ends the session here.
  const idp = await context.newPage();
  await idp.goto(`${IDP}/session/end`);
  await shot(idp, "05-provider-logout");
  // The provider sends its logout tokens before it answers the form: once its success page is
  // shown, this server has ended the session (closing the page sooner could cancel the logout).
  await idp.click('button[name="logout"]');
  await idp.waitForURL((u) => u.pathname.startsWith("/session/end/success"));
  await idp.close();
  // The next refresh (of the first tab here, forced unless one of the tabs came to it first,
  // e.g. on becoming visible again) is refused; the other tab hears that it ended.
  await page.locator("#force-refresh").click({ timeout: 5_000 }).catch(() => {});
  for (const tab of [page, tab2]) await expect(tab.locator("#login-card")).toBeVisible({ timeout: 10_000 });
  await shot(page, "06-ended");
});

test("declining at the provider comes back to the demo with the reason, signed out", async ({ context }) => {
  const page = await context.newPage();
  await page.goto(OIDC_DEMO);
  await page.getByRole("button", { name: /Sign in with idp/ }).click();
  await page.waitForURL((u) => u.href.startsWith(IDP));
  // devInteractions' "cancel" link aborts the interaction: access_denied.
  await page.click('a[href*="/abort"]');
  await page.waitForURL((u) => u.href.startsWith(OIDC_DEMO));
  await expect(page.locator("#login-error")).toHaveText("Sign-in with the provider was cancelled.");
  expect(page.url()).not.toContain("tw_error");
  await expect(page.locator("#login-card")).toBeVisible();
});

test("a provider's sign-in is recent only when asked with maxAge: 0: the provider asks again and says when", async ({ context }) => {
  test.setTimeout(120_000);
  const page = await context.newPage();
  await page.goto(OIDC_DEMO);
  await page.getByRole("button", { name: /Sign in with idp/ }).click();
  await atTheProvider(page, "ines");
  await expect(page.locator("#session")).toBeVisible();
  // The provider did not say when its user signed in: no auth_time, not recent.
  expect((await page.evaluate(() => (window as any).auth.claims())).auth_time).toBeUndefined();
  // A maxAge that is no whole number of seconds up to a day: a ConfigError, nowhere to go.
  const bad = await page.evaluate(async () => {
    const out: string[] = [];
    for (const maxAge of [-1, 1.5, 86_401, "0", NaN]) {
      await (window as any).auth.loginWithRedirect({ provider: "idp", maxAge })
        .then(() => out.push("navigated"), (e: any) => out.push(`${e.name} ${e.message}`));
    }
    return out;
  });
  expect(bad).toEqual(Array(5).fill("ConfigError bad maxAge"));
  // maxAge 0: the provider asks its user again, though signed in there, and says when.
  const started = page.waitForRequest((r) => r.url().startsWith(IDP) && r.url().includes("max_age=0"));
  await page.evaluate(() => { (window as any).auth.loginWithRedirect({ provider: "idp", maxAge: 0 }); });
  await started;
  await atTheProvider(page, "ines");
  await expect(page.locator("#session")).toBeVisible();
  const claims = await page.evaluate(() => (window as any).auth.claims());
  expect(Math.abs(claims.auth_time - Date.now() / 1000)).toBeLessThan(120);
  expect(claims.email).toBe("ines@idp.test");
});
