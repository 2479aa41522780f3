// tokenwarden/react in a React 19 app under StrictMode (tests/react: Vite 7, strict TypeScript,
// the packed tarball, a development build so StrictMode really mounts everything twice),
// served by the reference server with 10-second tokens.
import { test, expect, type Page } from "@playwright/test";
import { REACT } from "./playwright.config";
import { hook, newUser, sleep, watchErrors } from "./helpers";

const stats = () => hook("GET", "/test/stats", undefined, REACT);
const reset = () => hook("POST", "/test/reset", undefined, REACT);
const faults = (f: object) => hook("POST", "/test/faults", f, REACT);
/** The page's Web Locks: held and waiting. */
const locks = (p: Page) =>
  p.evaluate(async () => {
    const q = await navigator.locks.query();
    return { held: q.held?.length ?? 0, pending: q.pending?.length ?? 0 };
  });
/** The fixture's counters: the manager's live listeners (on() minus off()), Session's mounts. */
const probe = (p: Page) =>
  p.evaluate(() => {
    const w = window as any;
    return { listeners: w.probe.listeners, subscribed: w.probe.subscribed, mounts: w.probe.mounts.count };
  });

async function open(page: Page) {
  const errors = watchErrors(page);
  await page.goto(REACT);
  return errors;
}

test("StrictMode: login, a request, expiry and refresh, one refresh at mount, logout from another tab, nothing left after unmount", async ({ context }) => {
  await reset();
  const page = await context.newPage();
  const errors = await open(page);
  const status = page.getByTestId("status");
  await expect(status).toHaveText("signed out");
  await expect(page.getByRole("button", { name: "Log in" })).toBeEnabled();
  expect((await stats()).refresh_calls, "no session hint: no refresh at all").toBe(0);
  // StrictMode mounted Session twice and subscribed twice; one subscription is left.
  let p = await probe(page);
  expect(p.mounts).toBe(2);
  expect(p.listeners).toBe(4);
  expect(p.subscribed).toBeGreaterThan(p.listeners);

  // Login through the form.
  const { email, password } = await newUser(REACT);
  await page.getByLabel("email").fill(email);
  await page.getByLabel("password").fill(password);
  await page.getByRole("button", { name: "Log in" }).click();
  await expect(status).toHaveText(`signed in as ${email}`);

  // An authenticated request.
  await page.getByRole("button", { name: "Load profile" }).click();
  await expect(page.getByTestId("name")).toHaveText("Tab User");

  // Expiry: the 10-second token is due after 5 s; the next request refreshes first, and the UI
  // shows the new expiry.
  const expires = await page.getByTestId("expires").innerText();
  await reset();
  await sleep(5_200);
  await page.getByRole("button", { name: "Load profile" }).click();
  await expect(page.getByTestId("expires")).not.toHaveText(expires);
  expect((await stats()).refresh_calls).toBe(1);

  // A reload: StrictMode mounts the provider twice, and exactly one refresh restores the session
  // (one rotation; the new page's first call is the DPoP nonce round trip, nothing rotated).
  await reset();
  await page.reload();
  await expect(status).toHaveText(`signed in as ${email}`);
  // A second tab at once, while the token is far from due (5 s, for a page that loads React's
  // development build and compiles the .wasm): it gets the token (and nonce) from this one, no
  // refresh of its own.
  const other = await context.newPage();
  const otherErrors = await open(other);
  await expect(other.getByTestId("status")).toHaveText(`signed in as ${email}`);
  await sleep(500);
  let s = await stats();
  expect([s.refresh_calls, s.refresh_rotated], "one restore here, none in the new tab").toEqual([2, 1]);
  expect(await locks(page)).toEqual({ held: 0, pending: 0 });
  p = await probe(page);
  expect(p.mounts).toBe(2);
  expect(p.listeners).toBe(4);

  // A logout in the other tab shows in this one.
  await other.getByRole("button", { name: "Log out" }).click();
  await expect(status).toHaveText("signed out");
  await expect(page.getByTestId("end-reason")).toHaveText("logout");
  otherErrors.check();
  await other.close();

  // Unmount: no listener left on the manager, no lock held or waited for.
  await page.getByRole("button", { name: "Unmount" }).click();
  expect((await probe(page)).listeners).toBe(0);
  expect(await locks(page)).toEqual({ held: 0, pending: 0 });
  // Mount again: subscribed again, no second restore.
  await page.getByRole("button", { name: "Mount" }).click();
  await expect(status).toHaveText("signed out");
  expect((await probe(page)).listeners).toBe(4);
  s = await stats();
  expect([s.refresh_calls, s.refresh_rotated]).toEqual([2, 1]);

  errors.check();
});

test("unmounted in the middle of the refresh at mount: the lock is released and auth still works", async ({ page }) => {
  const errors = await open(page);
  const { email, password } = await newUser(REACT);
  await page.getByLabel("email").fill(email);
  await page.getByLabel("password").fill(password);
  await page.getByRole("button", { name: "Log in" }).click();
  await expect(page.getByTestId("status")).toHaveText(`signed in as ${email}`);

  // A slow server: the refresh at mount holds the Web Lock for a second...
  await faults({ refresh_latency_ms: 1_000 });
  try {
    await page.reload();
    await expect.poll(() => locks(page), { timeout: 5_000 }).toEqual({ held: 1, pending: 0 });
    // ...and the app unmounts the provider right then.
    await page.getByRole("button", { name: "Unmount" }).click();
    expect((await probe(page)).listeners).toBe(0);
    // The refresh finishes on its own and lets go of the lock: nothing is orphaned.
    await expect.poll(() => locks(page), { timeout: 5_000 }).toEqual({ held: 0, pending: 0 });
  } finally {
    await faults({ refresh_latency_ms: 0 });
  }
  await page.getByRole("button", { name: "Mount" }).click();
  await expect(page.getByTestId("status")).toHaveText(`signed in as ${email}`);
  await page.getByRole("button", { name: "Load profile" }).click();
  await expect(page.getByTestId("name")).toHaveText("Tab User");
  errors.check();
});

test("back from a provider without signing in: useAuth() shows restore()'s LoginError, the address is cleaned, nobody is signed in", async ({ page }) => {
  // What loginWithRedirect left in this tab (a link to the app with a tw_error is no refusal).
  await page.addInitScript(() => sessionStorage.setItem(`tokenwarden ${location.origin}/auth/refresh`, ""));
  await page.goto(`${REACT}/?tw_error=access_denied&tab=2`);
  await expect(page.getByTestId("restore-error")).toHaveText("LoginError:access_denied");
  await expect(page.getByTestId("status")).toHaveText("signed out");
  expect(new URL(page.url()).search).toBe("?tab=2");
});
