// tokenwarden/angular in an Angular 21 app (tests/angular: standalone, zoneless, @angular/build,
// strict TypeScript and templates, the packed tarball), served by the reference server with
// 10-second tokens. Requests go through HttpClient and the interceptor, on the XHR backend and on
// the fetch backend (withFetch(), the page's ?backend=fetch).
import { test, expect, type Page, type Request } from "@playwright/test";
import { ANGULAR } from "./playwright.config";
import { hook, newUser, sleep, watchErrors } from "./helpers";

const stats = () => hook("GET", "/test/stats", undefined, ANGULAR);
const reset = () => hook("POST", "/test/reset", undefined, ANGULAR);

/** The page's requests to /api/me, as sent (after the interceptor). */
function meRequests(page: Page) {
  const seen: Request[] = [];
  page.on("request", (r) => new URL(r.url()).pathname === "/api/me" && seen.push(r));
  return seen;
}

/** Uncaught errors of the page (for the steps whose 401s and CORS refusals Chromium logs). */
function uncaught(page: Page) {
  const seen: string[] = [];
  page.on("pageerror", (e) => seen.push(String(e)));
  return seen;
}

async function signIn(page: Page) {
  const { email, password } = await newUser(ANGULAR);
  await expect(page.getByRole("button", { name: "Log in" })).toBeEnabled();
  await page.getByLabel("email").fill(email);
  await page.getByLabel("password").fill(password);
  await page.getByRole("button", { name: "Log in" }).click();
  await expect(page.getByTestId("status")).toHaveText(`signed in as ${email}`);
  return email;
}

/** Clicks "Load profile" and waits for the load to succeed. */
async function loadProfile(page: Page) {
  const loads = Number(await page.getByTestId("loads").innerText());
  await page.getByRole("button", { name: "Load profile" }).click();
  await expect(page.getByTestId("loads")).toHaveText(String(loads + 1));
  await expect(page.getByTestId("name")).toHaveText("Tab User");
}

for (const backend of ["xhr", "fetch"] as const) {
  test(`HttpClient (${backend}): signed requests, one refresh at expiry, a 401 replayed once (a second one the caller's), own headers and other origins untouched`, async ({ page }) => {
    const errors = watchErrors(page);
    const pageErrors = uncaught(page);
    const me = meRequests(page);
    await page.goto(`${ANGULAR}/?backend=${backend}`);
    await expect(page.getByTestId("status")).toHaveText("signed out");
    await signIn(page);

    // An authenticated request through HttpClient: a DPoP token and a proof for exactly it.
    await loadProfile(page);
    const sent = await me[0].allHeaders();
    expect(sent.authorization).toMatch(/^DPoP ey/);
    const proof = JSON.parse(Buffer.from(sent.dpop.split(".")[1], "base64url").toString());
    expect([proof.htm, proof.htu]).toEqual(["GET", `${ANGULAR}/api/me`]);

    // Expiry: the token is due after 5 s; the next request refreshes first, once.
    const expires = await page.getByTestId("expires").innerText();
    await reset();
    await sleep(5_200);
    await loadProfile(page);
    await expect(page.getByTestId("expires")).not.toHaveText(expires);
    expect((await stats()).refresh_calls).toBe(1);

    // A request that brings its own Authorization goes as it is (no token, no proof added).
    const own = page.waitForRequest((r) => r.url().includes("/test/echo"));
    await page.getByRole("button", { name: "Own header" }).click();
    await expect(page.getByTestId("result")).toHaveText("echo Bearer mine");
    expect((await (await own).allHeaders()).dpop).toBeUndefined();
    errors.check();

    // A 401 (the signing key revoked: the token in memory is refused): one refresh, one replay.
    // (Chromium logs the 401, hence only uncaught errors are checked from here on.)
    await reset();
    await hook("POST", "/test/keys/revoke", undefined, ANGULAR);
    const before = me.length;
    await loadProfile(page);
    const statuses = await Promise.all(me.slice(before).map(async (r) => (await r.response())?.status()));
    expect(statuses).toEqual([401, 200]);
    expect((await stats()).refresh_calls).toBe(1);
    const [a1, a2] = await Promise.all(me.slice(before).map(async (r) => (await r.allHeaders()).authorization));
    expect(a2).not.toBe(a1);

    // A 401 that no refresh fixes: one refresh, one replay, and the second 401 is the caller's
    // HttpErrorResponse (never a loop).
    await reset();
    const refused: Request[] = [];
    page.on("request", (r) => r.url().includes("/test/echo?status=401") && refused.push(r));
    await page.getByRole("button", { name: "Always refused" }).click();
    await expect(page.getByTestId("result")).toHaveText("refused 401");
    await sleep(300);
    expect(refused.length).toBe(2);
    expect((await stats()).refresh_calls).toBe(1);

    // Another origin (this server by another name, which lets the page read its answer) gets no
    // header.
    const other = page.waitForRequest((r) => r.url().startsWith("http://localhost:"));
    await page.getByRole("button", { name: "Other origin" }).click();
    const toOther = await (await other).allHeaders();
    expect([toOther.authorization, toOther.dpop]).toEqual([undefined, undefined]);
    await expect(page.getByTestId("result")).toHaveText("other ok");
    expect(pageErrors).toEqual([]);
  });
}

test("the guard, and a logout in another tab reflected in the signals", async ({ context }) => {
  const page = await context.newPage();
  const errors = watchErrors(page);
  await page.goto(`${ANGULAR}/#/private`);
  // Signed out: the guard sends the router back to the sign-in form.
  await expect(page.getByTestId("status")).toHaveText("signed out");
  expect(page.url()).toBe(`${ANGULAR}/#/`);
  const email = await signIn(page);
  await page.getByRole("link", { name: "Private" }).click();
  await expect(page.getByTestId("private")).toHaveText(`private page of ${email}`);
  await page.goBack();
  await expect(page.getByTestId("status")).toHaveText(`signed in as ${email}`);

  // A new tab: the guard waits for restore() (the token from this tab), then lets it in; its
  // logout shows here at once.
  const other = await context.newPage();
  const otherErrors = watchErrors(other);
  await other.goto(`${ANGULAR}/#/private`);
  await expect(other.getByTestId("private")).toHaveText(`private page of ${email}`);
  await other.goto(`${ANGULAR}/#/`);
  await other.getByRole("button", { name: "Log out" }).click();
  await expect(other.getByTestId("status")).toHaveText("signed out");
  await expect(page.getByTestId("status")).toHaveText("signed out");
  await expect(page.getByTestId("end-reason")).toHaveText("logout");
  otherErrors.check();
  errors.check();
});
