// The story the Vue and Svelte fixtures (tests/vue, tests/svelte) are driven through: the same
// page, written with each framework's binding, served by the reference server with 10-second
// tokens.
import { test, expect, type Page, type Request } from "@playwright/test";
import { hook, newUser, sleep, watchErrors } from "./helpers";

/** The page's requests to /api/me, as sent. */
function meRequests(page: Page) {
  const seen: Request[] = [];
  page.on("request", (r) => new URL(r.url()).pathname === "/api/me" && seen.push(r));
  return seen;
}

/** Clicks "Load profile" and waits for the load to succeed. */
async function loadProfile(page: Page) {
  const loads = Number(await page.getByTestId("loads").innerText());
  await page.getByRole("button", { name: "Load profile" }).click();
  await expect(page.getByTestId("loads")).toHaveText(String(loads + 1));
  await expect(page.getByTestId("name")).toHaveText("Tab User");
}

export function spaStory(framework: string, base: string) {
  const stats = () => hook("GET", "/test/stats", undefined, base);
  const reset = () => hook("POST", "/test/reset", undefined, base);

  test(`${framework}: login, a request, one refresh at expiry, a 401 replayed once, logout from another tab`, async ({ context }) => {
    await reset();
    const page = await context.newPage();
    const errors = watchErrors(page);
    const pageErrors: string[] = [];
    page.on("pageerror", (e) => pageErrors.push(String(e)));
    const me = meRequests(page);
    await page.goto(base);
    const status = page.getByTestId("status");
    await expect(status).toHaveText("signed out");
    await expect(page.getByRole("button", { name: "Log in" })).toBeEnabled();
    expect((await stats()).refresh_calls, "no session hint: no refresh at all").toBe(0);

    const { email, password } = await newUser(base);
    await page.getByLabel("email").fill(email);
    await page.getByLabel("password").fill(password);
    await page.getByRole("button", { name: "Log in" }).click();
    await expect(status).toHaveText(`signed in as ${email}`);
    await loadProfile(page);
    expect((await me[0].allHeaders()).authorization).toMatch(/^DPoP ey/);

    // Expiry: the token is due after 5 s; the next request refreshes first, once, and the UI
    // shows the new expiry.
    const expires = await page.getByTestId("expires").innerText();
    await reset();
    await sleep(5_200);
    await loadProfile(page);
    await expect(page.getByTestId("expires")).not.toHaveText(expires);
    expect((await stats()).refresh_calls).toBe(1);
    errors.check();

    // A 401 (the signing key revoked): one refresh, one replay. (Chromium logs the 401: only
    // uncaught errors are checked from here on.)
    await reset();
    await hook("POST", "/test/keys/revoke", undefined, base);
    const before = me.length;
    await loadProfile(page);
    const statuses = await Promise.all(me.slice(before).map(async (r) => (await r.response())?.status()));
    expect(statuses).toEqual([401, 200]);
    expect((await stats()).refresh_calls).toBe(1);

    // A second tab gets the session from this one, logs out, and this one shows it.
    const other = await context.newPage();
    const otherErrors = watchErrors(other);
    await other.goto(base);
    await expect(other.getByTestId("status")).toHaveText(`signed in as ${email}`);
    await other.getByRole("button", { name: "Log out" }).click();
    await expect(status).toHaveText("signed out");
    await expect(page.getByTestId("end-reason")).toHaveText("logout");
    otherErrors.check();
    expect(pageErrors).toEqual([]);
  });
}
