// auth.authorize(method, url) with a real XMLHttpRequest (what Angular's default backend and
// older code send), against the reference server's API with DPoP: the server checks the proof
// (bound key, method, URL, token hash, nonce). The harness page (tests/e2e/site) on BASE, whose
// TokenManager allows BASE only; LONG is another origin that answers BASE's pages (CORS).
import { test, expect, type Page } from "@playwright/test";
import { BASE, LONG, hook, newUser, openTab, reset, stats } from "./helpers";

/** What the page's XHR code gets: the header names authorize() gave, the status, the body, what
 * retry() said about that response (header names, or null), the replay's status, and what a
 * second retry() after the replay said. */
type Sent = { names: string[]; status: number; body: string; retry: string[] | null; replay?: number; again: string[] | null;
  /** Whether the replay's token differs from the first one's (null: no replay). */
  newToken: boolean | null };

/** In the page: authorize(method, url), send it with XMLHttpRequest, and on a 401 ask retry()
 * and send the one replay; `tamper` sends the request with another method than the one signed. */
function send(page: Page, method: string, url: string, o: { tamper?: string } = {}): Promise<Sent> {
  return page.evaluate(async ({ method, url, tamper }) => {
    const xhr = (m: string, u: string, headers: Record<string, string>) =>
      new Promise<XMLHttpRequest>((done) => {
        const x = new XMLHttpRequest();
        x.open(m, u);
        for (const [k, v] of Object.entries(headers)) x.setRequestHeader(k, v);
        x.onloadend = () => done(x);
        x.send(m === "GET" ? null : "{}");
      });
    const responseLike = (x: XMLHttpRequest) => ({ status: x.status, headers: { get: (n: string) => x.getResponseHeader(n) } });
    const auth = (window as any).auth;
    const a = await auth.authorize(method, url);
    const x = await xhr(tamper ?? method, url, a.headers);
    const h: Record<string, string> | null = await a.retry(responseLike(x));
    let replay: number | undefined, again: Record<string, string> | null = null;
    if (h) {
      replay = (await xhr(method, url, h)).status;
      // Once: whatever the replay got (a 401 here), retry() has nothing more.
      again = await a.retry({ status: 401, headers: { get: () => null } });
    }
    return {
      names: Object.keys(a.headers).sort(), status: x.status, body: x.responseText,
      retry: h && Object.keys(h).sort(), again: again && Object.keys(again), replay,
      newToken: h ? h.Authorization !== a.headers.Authorization : null,
    };
  }, { method, url, tamper: o.tamper });
}

async function signedIn(context: import("@playwright/test").BrowserContext) {
  const page = await openTab(context);
  const { email, password } = await newUser();
  await page.evaluate((c) => (window as any).auth.login(c), { email, password });
  return page;
}

test("XHR with authorize(): the server accepts the proof for that request, and refuses it for another method", async ({ context }) => {
  const page = await signedIn(context);
  await reset();
  for (const url of ["/api/me", `${BASE}/api/me?x=1`]) {
    const r = await send(page, "GET", url);
    expect(r.names).toEqual(["Authorization", "DPoP"]);
    expect([r.status, JSON.parse(r.body).name, r.retry, r.again]).toEqual([200, "Tab User", null, null]);
  }
  // A proof signed for GET, sent with a PATCH: the server checks htm and refuses.
  const wrong = await send(page, "GET", "/api/me", { tamper: "PATCH" });
  expect(wrong.status).toBe(401);
  expect(wrong.body).toContain("invalid_dpop_proof");
  expect((await stats()).refresh_calls).toBe(0);
});

test("another origin gets no headers, and retry() never signs for it", async ({ context }) => {
  const page = await signedIn(context);
  const r = await send(page, "GET", `${LONG}/api/me`);
  // Sent without a token, LONG answers 401 (CORS lets the page read it): nothing to replay.
  expect([r.names, r.status, r.retry, r.replay, r.again]).toEqual([[], 401, null, undefined, null]);
  expect((await page.evaluate(() => (window as any).auth.authorize("GET", "https://elsewhere.example/x"))).headers).toEqual({});
});

test("a 401 (the signing key revoked) gets one refresh and one replay; the replay's headers are new", async ({ context }) => {
  const page = await signedIn(context);
  await reset();
  await hook("POST", "/test/keys/revoke");
  const r = await send(page, "GET", "/api/me");
  expect([r.names, r.status, r.retry, r.replay, r.again, r.newToken]).toEqual([["Authorization", "DPoP"], 401, ["Authorization", "DPoP"], 200, null, true]);
  const s = await stats();
  expect([s.refresh_calls, s.refresh_rotated]).toEqual([1, 1]);
});

test("signed out: no headers, no request to the auth server", async ({ context }) => {
  const page = await signedIn(context);
  await page.evaluate(() => (window as any).auth.logout());
  await reset();
  const r = await send(page, "GET", "/api/me");
  expect([r.names, r.status, r.retry, r.again]).toEqual([[], 401, null, null]);
  expect((await stats()).refresh_calls).toBe(0);
});

test("the auth server's own signed-in calls carry the token although only an API's origin is allowed; fetch to it does not", async ({ context }) => {
  const page = await openTab(context, { allowedOrigins: [LONG] });
  const { email, password } = await newUser();
  const r = await page.evaluate(async ({ email, password }) => {
    const auth = (window as any).auth;
    await auth.login({ email, password });
    // The auth server (this page's origin) is not an allowed origin: auth.fetch sends no token.
    const me = (await auth.fetch("/api/me")).status;
    // changePassword goes to the auth server, signed: the token and a proof.
    await auth.changePassword({ currentPassword: password, newPassword: password + "-new" });
    await auth.logout();
    await auth.login({ email, password: password + "-new" });
    return { me, signedIn: auth.isAuthenticated };
  }, { email, password });
  expect(r).toEqual({ me: 401, signedIn: true });
});
