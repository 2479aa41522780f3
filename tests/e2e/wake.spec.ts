// A tab that slept (hidden, frozen, offline) through its token's expiry refreshes once when it
// comes back, before the app asks: no failed request, no re-login, one refresh for all tabs.
import { test, expect, type Page } from "@playwright/test";
import { UNTIL_DUE_MS, events, newUser, openTab, reset, sleep, stats } from "./helpers";

const wake = (p: Page) =>
  p.evaluate(() => {
    document.dispatchEvent(new Event("visibilitychange"));
    window.dispatchEvent(new Event("online"));
    window.dispatchEvent(new Event("pageshow"));
  });

test("waking after the token fell due refreshes once, before any request", async ({ context }) => {
  const tab = await openTab(context);
  const { email, password } = await newUser();
  await tab.evaluate((c) => (window as any).auth.login(c), { email, password });
  await reset();
  await sleep(UNTIL_DUE_MS);
  expect((await stats()).refresh_calls, "nothing happens while the tab sleeps").toBe(0);
  await wake(tab);
  await wake(tab);
  await expect.poll(async () => (await stats()).refresh_rotated).toBe(1);
  // The server counts the rotation before its answer reaches the tab: the event follows.
  await expect.poll(() => events(tab)).toContain("refresh");
  // The app's first request after the wake finds a fresh token: no second refresh.
  expect(await tab.evaluate(() => (window as any).burst(5))).toEqual([200, 200, 200, 200, 200]);
  expect((await stats()).refresh_rotated).toBe(1);
});

test("waking two tabs at once still makes one refresh", async ({ context }) => {
  const a = await openTab(context);
  const b = await openTab(context);
  const { email, password } = await newUser();
  await a.evaluate((c) => (window as any).auth.login(c), { email, password });
  await expect.poll(() => b.evaluate(() => (window as any).auth.isAuthenticated)).toBe(true);
  await reset();
  await sleep(UNTIL_DUE_MS);
  await Promise.all([wake(a), wake(b)]);
  // Once the refresh is done (however long the machine takes), and still one a moment later.
  await expect.poll(async () => (await stats()).refresh_rotated).toBe(1);
  await expect.poll(() => events(b)).toContain("refresh");
  await sleep(500);
  expect((await stats()).refresh_rotated).toBe(1);
  expect((await stats()).reuse_detections).toBe(0);
});

test("a fresh token or no session: waking does nothing", async ({ context }) => {
  const tab = await openTab(context);
  await reset();
  await wake(tab);
  const { email, password } = await newUser();
  await tab.evaluate((c) => (window as any).auth.login(c), { email, password });
  await reset();
  await wake(tab);
  await sleep(200);
  expect((await stats()).refresh_calls).toBe(0);
});
