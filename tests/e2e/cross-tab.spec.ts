// Across tabs, in real Chromium against the real server: one BrowserContext, several pages of
// one origin, sharing cookies, Web Locks and BroadcastChannel as real tabs do.
import { test, expect, type BrowserContext, type Page } from "@playwright/test";
import {
  STORM, UNTIL_DUE_MS, UNTIL_DUE_STORM_MS, events, hook, isAuthenticated, newUser, openTab, reset, sleep, stats,
} from "./helpers";
import { HOOKS_SECRET, LONG } from "./playwright.config";

/** `n` tabs, logged in through the first one (the others learn it from the channel). */
async function loggedInTabs(context: BrowserContext, n: number, options: object = {}, base?: string): Promise<Page[]> {
  const tabs: Page[] = [];
  for (let i = 0; i < n; i++) tabs.push(await openTab(context, options, base));
  const { email, password } = await newUser(base);
  await tabs[0].evaluate((c) => (window as any).auth.login(c), { email, password });
  for (const t of tabs.slice(1)) {
    // Cross-tab: the login arrives by message. Without it: each tab restores from the cookie.
    if (!(await isAuthenticated(t))) await t.evaluate(() => (window as any).auth.restore());
  }
  for (const t of tabs) expect(await isAuthenticated(t)).toBe(true);
  await reset(base);
  return tabs;
}

/** Every tab fires `perTab` concurrent auth.fetch calls at once; returns all statuses. */
async function storm(tabs: Page[], perTab: number): Promise<(number | string)[]> {
  const results = await Promise.all(tabs.map((t) => t.evaluate((n) => (window as any).burst(n), perTab)));
  return results.flat();
}

test.describe("cross-tab (default)", () => {
  test("4 tabs x 250 requests at expiry: exactly one refresh for the whole browser", async ({ context }) => {
    const tabs = await loggedInTabs(context, 4, {}, STORM);
    await sleep(UNTIL_DUE_STORM_MS);
    const statuses = await storm(tabs, 250);
    expect(statuses).toHaveLength(1000);
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
    const s = await stats(STORM);
    // One request, one rotation: with DPoP the token on the channel comes with the server's
    // nonce, so no tab hears use_dpop_nonce first.
    expect(s.refresh_calls).toBe(1);
    expect(s.refresh_rotated).toBe(1);
    expect(s.reuse_detections).toBe(0);
    // Every tab heard about the refresh.
    for (const t of tabs) expect(await events(t)).toContain("refresh");
  });

  test("10 expiry cycles: 10 refreshes, nobody logged out", async ({ context }) => {
    const tabs = await loggedInTabs(context, 4);
    for (let cycle = 1; cycle <= 10; cycle++) {
      await sleep(UNTIL_DUE_MS);
      const statuses = await storm(tabs, 10);
      expect(statuses.filter((s) => s !== 200), `cycle ${cycle}`).toEqual([]);
      expect((await stats()).refresh_rotated, `cycle ${cycle}`).toBe(cycle);
    }
    const s = await stats();
    expect(s.reuse_detections).toBe(0);
    expect(s.revocations).toBe(0);
    for (const t of tabs) expect(await events(t)).not.toContain("sessionExpired");
  });

  test("logout in one tab reaches every tab", async ({ context }) => {
    const tabs = await loggedInTabs(context, 4);
    await tabs[0].evaluate(() => (window as any).auth.logout());
    for (const t of tabs) {
      // The other tabs hear it by message: when it arrives, not at a fixed time.
      await expect.poll(() => isAuthenticated(t)).toBe(false);
      await expect.poll(() => events(t)).toContain("logout");
      const echo = await t.evaluate(() => (window as any).echo());
      expect(echo.authorization).toBeNull();
    }
  });

  test("a new tab gets the live token from its peers, without a refresh", async ({ context }) => {
    // 10-minute tokens: the peers' token is never due by the time the new tab has loaded, on
    // however slow a machine (a due token is not handed over: the new tab would refresh).
    await loggedInTabs(context, 2, {}, LONG);
    const fresh = await openTab(context, {}, LONG);
    expect(await fresh.evaluate(() => (window as any).auth.restore())).toBe(true);
    expect((await stats(LONG)).refresh_calls).toBe(0);
    const echo = await fresh.evaluate(() => (window as any).echo());
    expect(echo.authorization).toMatch(/^DPoP ey/);
  });

  test("the tab holding the lock is closed mid-refresh: the others finish", async ({ context }) => {
    const tabs = await loggedInTabs(context, 4);
    await sleep(UNTIL_DUE_MS);
    await hook("POST", "/test/faults", { refresh_latency_ms: 1500 });
    // Tab 0 starts the refresh and holds the lock while the server is slow...
    const doomed = tabs[0].evaluate(() => (window as any).burst(5)).catch(() => "closed");
    await sleep(300);
    // ...the others queue behind it...
    const others = Promise.all(tabs.slice(1).map((t) => t.evaluate(() => (window as any).burst(25))));
    await sleep(200);
    // ...and the holder disappears. The browser releases its lock.
    await tabs[0].close();
    const statuses = (await others).flat();
    await doomed;
    await hook("POST", "/test/faults", { refresh_latency_ms: 0 });
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
    const s = await stats();
    expect(s.reuse_detections).toBe(0);
    expect(s.refresh_rotated).toBeLessThanOrEqual(2); // the orphaned one, and one by a survivor
  });
});

test.describe("crossTab: false (what is lost without it)", () => {
  const perTab = { crossTab: false };

  test("each tab refreshes on its own: 4 refreshes per expiry, saved from logout only by the server's grace rule", async ({ context }) => {
    const tabs = await loggedInTabs(context, 4, perTab, STORM);
    await sleep(UNTIL_DUE_STORM_MS);
    const statuses = await storm(tabs, 250);
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
    const s = await stats(STORM);
    // Still one per tab (single flight inside each tab), but four for the browser.
    expect(s.refresh_rotated).toBe(4);
    expect(s.reuse_detections).toBe(0);
  });

  test("a logout does not reach the other tabs until their next refresh fails", async ({ context }) => {
    const tabs = await loggedInTabs(context, 3, perTab);
    await tabs[0].evaluate(() => (window as any).auth.logout());
    await sleep(50);
    expect(await isAuthenticated(tabs[0])).toBe(false);
    for (const t of tabs.slice(1)) {
      expect(await isAuthenticated(t)).toBe(true);
      // Their access token is still in memory; the server refuses it (session revoked)...
      const [status] = await t.evaluate(() => (window as any).burst(1));
      // ...and the refresh that follows ends the session: a SessionExpiredError, late.
      expect(status).toBe("SessionExpiredError");
      expect(await isAuthenticated(t)).toBe(false);
    }
  });

  test("a new tab must refresh to get a token", async ({ context }) => {
    await loggedInTabs(context, 2, perTab);
    const fresh = await openTab(context, perTab);
    expect(await fresh.evaluate(() => (window as any).auth.restore())).toBe(true);
    expect((await stats()).refresh_rotated).toBe(1);
  });
});

test.describe("a hostile script of the same origin", () => {
  /** The channel and lock name every TokenManager of this origin uses. */
  const NAME = (page: Page) => page.evaluate(() => "tokenwarden " + new URL("/auth/refresh", location.href).href);

  test("injected channel messages change no tab's state: future, eternal, malformed, another account's", async ({ context }) => {
    // On LONG: the tabs' token must not fall due (and be refreshed) before it is compared.
    const tabs = await loggedInTabs(context, 2, {}, LONG);
    const before = await tabs[0].evaluate(() => (window as any).echo());
    // Another account's real token, as an attacker who logged in elsewhere would have it.
    const other = await newUser(LONG);
    const evil = await context.newPage();
    await evil.goto(new URL("/", tabs[0].url()).href + "?evil");
    const name = await NAME(tabs[0]);
    await evil.evaluate(({ name, other }) => fetch("/auth/login", {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(other),
      credentials: "omit",
    }).then((r) => r.json()).then((j) => {
      const ch = new BroadcastChannel(name);
      const now = Date.now();
      ch.postMessage({ t: "token", kind: "login", token: j.access_token, lifetime: 1e9, at: now + 1e12 });
      ch.postMessage({ t: "token", kind: "login", token: "a\nb", lifetime: 600, at: now });
      ch.postMessage({ t: "token", kind: "refresh", token: j.access_token, lifetime: Infinity, at: now });
      ch.postMessage({ t: "token", kind: "refresh", token: 42, lifetime: 600, at: now });
      ch.postMessage({ t: "logout", at: now + 1e12 });
      ch.postMessage({ t: "ended", reason: "nonsense", at: now });
      ch.postMessage({ t: "nonsense" });
      ch.postMessage("garbage");
    }), { name, other });
    await sleep(200);
    for (const t of tabs) {
      expect(await isAuthenticated(t)).toBe(true);
      const echo = await t.evaluate(() => (window as any).echo());
      expect(echo.authorization, "still the user's own token").toBe(before.authorization);
      expect(await t.evaluate(() => (window as any).burst(3))).toEqual([200, 200, 200]);
    }
    // The user's own token (a script gets it as easily as the tabs do), posted as new with a
    // year to live: it lives no longer than its claims say.
    const held = (await tabs[0].evaluate(() => (window as any).echo())).authorization.slice("DPoP ".length);
    await evil.evaluate(({ name, held }) => {
      new BroadcastChannel(name).postMessage({ t: "token", kind: "refresh", token: held, lifetime: 31536000, at: Date.now() + 100 });
    }, { name, held });
    await sleep(300);
    for (const t of tabs) {
      const left = await t.evaluate(() => (window as any).auth.expiresAt - Date.now());
      expect(left, "no longer than the token's own lifetime (10 minutes)").toBeLessThan(601_000);
    }
  });

  test("nonces posted on the channel never displace the server's: a refresh needs no nonce retry", async ({ context }) => {
    const tabs = await loggedInTabs(context, 1);
    const evil = await context.newPage();
    await evil.goto(new URL("/", tabs[0].url()).href + "?evil");
    const name = await NAME(tabs[0]);
    await evil.evaluate((name) => {
      const ch = new BroadcastChannel(name);
      for (let i = 0; i < 50; i++) ch.postMessage({ t: "ask", nonce: "bogus-nonce-" + i });
    }, name);
    await sleep(200);
    await reset();
    await tabs[0].evaluate(() => (window as any).auth.refresh({ force: true }));
    // With a posted nonce in its proof, the server would answer use_dpop_nonce first: 2 calls.
    expect((await stats()).refresh_calls).toBe(1);
    expect(await tabs[0].evaluate(() => (window as any).burst(2))).toEqual([200, 200]);
  });

  test("the DPoP key store held by another page: NetworkError within refreshTimeoutMs + 1 s, then it works", async ({ context }) => {
    // On LONG: a token due meanwhile (BASE's are after 2 s) would add a refresh's tries to the time.
    const tabs = await loggedInTabs(context, 1, { refreshTimeoutMs: 1500 }, LONG);
    // A new tab of the app gets the token from the first, and must read the stored key to sign.
    // (On a loaded machine the first tab may answer after the new tab's wait for it: the new
    // tab then refreshes itself and reads the key at once; another new tab is opened then.)
    let fresh: Page | undefined;
    for (let tries = 0; !fresh; tries++) {
      expect(tries, "a new tab that got its token from the first").toBeLessThan(4);
      const before = (await stats(LONG)).refresh_calls;
      const tab = await openTab(context, { refreshTimeoutMs: 1500 }, LONG);
      expect(await tab.evaluate(() => (window as any).auth.restore())).toBe(true);
      if ((await stats(LONG)).refresh_calls === before) fresh = tab;
      else await tab.close();
    }
    const evil = await context.newPage();
    await evil.goto(new URL("/", tabs[0].url()).href + "?evil");
    // A readwrite transaction on the key store, kept alive by chaining requests forever.
    await evil.evaluate(() => new Promise<void>((holding) => {
      const r = indexedDB.open("tokenwarden");
      r.onsuccess = () => {
        const store = r.result.transaction("keys", "readwrite").objectStore("keys");
        const again = () => { store.get("x").onsuccess = again; };
        again();
        holding();
      };
    }));
    const t0 = Date.now();
    const [status] = await fresh.evaluate(() => (window as any).burst(1));
    expect(status).toBe("NetworkError");
    expect(Date.now() - t0).toBeLessThan(1500 + 1000);
    // The holder goes away: the same tab signs and works.
    await evil.close();
    expect(await fresh.evaluate(() => (window as any).burst(1))).toEqual([200]);
  });

  test("the key store's database version raised by another page: a reload still restores and logs in", async ({ context }) => {
    const tabs = await loggedInTabs(context, 1);
    const evil = await context.newPage();
    await evil.goto(new URL("/", tabs[0].url()).href + "?evil");
    // Raise the version (the driver used to open version 1 only) and drop the store.
    await evil.evaluate(() => new Promise<void>((done) => {
      const r = indexedDB.open("tokenwarden", 7);
      r.onupgradeneeded = () => r.result.deleteObjectStore("keys");
      r.onsuccess = () => { r.result.close(); done(); };
      r.onblocked = () => {};
    }));
    await evil.close();
    // The key went with the store: the session bound to it cannot be restored (as when the
    // user clears site data), but the app recovers: a new login works, and so does a reload.
    const page = tabs[0];
    await page.reload();
    await page.evaluate(() => (window as any).setup({}));
    await page.evaluate(() => (window as any).auth.restore().catch(() => false));
    const user = await newUser();
    await page.evaluate((u) => (window as any).auth.login(u), user);
    expect(await page.evaluate(() => (window as any).burst(2))).toEqual([200, 200]);
    await page.reload();
    await page.evaluate(() => (window as any).setup({}));
    expect(await page.evaluate(() => (window as any).auth.restore())).toBe(true);
    expect(await page.evaluate(() => (window as any).burst(1))).toEqual([200]);
  });

  test("patched prototypes cannot send the token or a proof to another origin", async ({ context }) => {
    const [tab] = await loggedInTabs(context, 1);
    // Another origin that answers this page (CORS) and echoes the Authorization it receives:
    // what an attacker's server would do. Each attack runs after the app loaded, then undoes
    // its patches; the app's own request must still carry the token at the end.
    const results = await tab.evaluate(async ({ evil, secret }) => {
      const here = location.origin;
      const echo = evil + "/test/echo";
      const mine = here + "/test/echo";
      const headers = { "x-test-hooks-secret": secret };
      const auth = (window as any).auth;
      const desc = Object.getOwnPropertyDescriptor;
      // The test's own view, taken before any patch.
      const originOf = desc(URL.prototype, "origin")!.get!;
      /** Where the answer came from, and the Authorization the other origin saw (if it was it). */
      const sent = async (p: Promise<Response>) => {
        try {
          const res = await p;
          const from = originOf.call(new URL(res.url));
          return from === here ? "here" : `${from}: ${(await res.json()).authorization}`;
        } catch (e) { return String(e); }
      };
      const patch = (o: object, k: PropertyKey, d: PropertyDescriptor) => {
        const before = desc(o, k);
        Object.defineProperty(o, k, { configurable: true, ...d });
        return () => (before ? Object.defineProperty(o, k, before) : delete (o as any)[k]);
      };
      const out: Record<string, string> = {};

      // 1. Every URL claims this page's origin, every Request this page's URL.
      let undo = [
        patch(URL.prototype, "origin", { get() { return here; } }),
        patch(Request.prototype, "url", { get() { return mine; } }),
      ];
      out.urlGetters = await sent(auth.fetch(echo, { headers }));
      out.requestGetter = await sent(auth.fetch(new Request(echo, { headers })));
      undo.forEach((u) => u());

      // 2. A setter on Object.prototype, so that an assigned `url` reads back as the evil one.
      undo = [patch(Object.prototype, "url", { set() {}, get() { return echo; } })];
      out.prototypeSetter = await sent(auth.fetch(mine, { headers }));
      undo.forEach((u) => u());

      // 3. instanceof answered "no" when the URL is checked, "yes" when the request is made; the
      // Request's string form names this page.
      let calls = 0;
      undo = [patch(Request, Symbol.hasInstance, { value: () => calls++ > 0 })];
      const r = new Request(echo, { headers });
      (r as any)[Symbol.toPrimitive] = () => mine;
      out.hasInstance = await sent(auth.fetch(r));
      undo.forEach((u) => u());

      // 4. A first answer faked as 401 (a replay follows), and clone() handing out an evil Request
      // for that replay.
      let faked = 0;
      const status = desc(Response.prototype, "status")!.get!;
      undo = [
        patch(Response.prototype, "status", { get() { return faked++ === 0 ? 401 : status.call(this); } }),
        patch(Request.prototype, "clone", { value() { return new Request(echo, { headers }); } }),
      ];
      out.cloneReplay = await sent(auth.fetch(new Request(mine, { headers })));
      undo.forEach((u) => u());

      // 5. URL.prototype.toString names the other origin: the login must still go to the login
      // endpoint (an unknown account: the real server's answer is invalid_credentials).
      undo = [patch(URL.prototype, "toString", { value() { return echo; } })];
      out.login = await auth.login({ email: "nobody@example.com", password: "not-the-password" })
        .then(() => "logged in", (e: any) => e.code);
      undo.forEach((u) => u());

      // 6. Map lookups that answer a missing key with a path of the other origin: the driver's
      // bookkeeping of its requests to the auth server must not decide where they go (a refresh,
      // a logout with the token).
      const get = Map.prototype.get;
      const seenBefore = performance.getEntriesByName(echo).length;
      undo = [patch(Map.prototype, "get", { value(k: unknown) { return get.call(this, k) ?? [undefined, echo]; } })];
      out.lookups = await auth.refresh({ force: true }).then(() => "refreshed", (e: any) => `${e.name} ${e.code}`);
      undo.forEach((u) => u());
      out.lookupsToEcho = String(performance.getEntriesByName(echo).length - seenBefore);

      // 7. A getter on Object.prototype for an init member the app did not set: fetch reads it
      // with the init as `this`, whose headers hold the token and an unused proof.
      const hget = Headers.prototype.get;
      let glimpsed = "";
      undo = [patch(Object.prototype, "priority", { get() {
        const h = (this as any)?.headers;
        if (h instanceof Headers) glimpsed += hget.call(h, "authorization") ?? "";
        return undefined;
      } })];
      await auth.fetch(mine, { headers });
      undo.forEach((u) => u());
      out.initGetter = glimpsed;

      // 8. Request.prototype.headers handing out a decoy: the token and proof would be set there,
      // and the request sent without them.
      const decoy = new Headers();
      undo = [patch(Request.prototype, "headers", { get() { return decoy; } })];
      const viaRequest = await auth.fetch(new Request(mine, { headers }));
      undo.forEach((u) => u());
      out.decoy = String(hget.call(decoy, "authorization"));
      out.viaRequest = (await viaRequest.json()).authorization;

      const own = await auth.fetch(mine, { headers });
      out.own = (await own.json()).authorization;
      return out;
    }, { evil: LONG, secret: HOOKS_SECRET });
    const evilSaw = `${LONG}: null`;
    expect.soft(results.urlGetters, "URL getters: the other origin gets no token").toBe(evilSaw);
    expect.soft(results.requestGetter, "Request.url getter: the other origin gets no token").toBe(evilSaw);
    expect.soft(results.prototypeSetter, "a setter on Object.prototype: sent where it was checked").toBe("here");
    expect.soft(results.hasInstance, "Symbol.hasInstance: the other origin gets no token").toBe(evilSaw);
    expect.soft(results.cloneReplay, "a faked 401 and a patched clone(): sent where it was checked").toBe("here");
    expect.soft(results.login, "a patched URL toString: the login reaches the login endpoint").toBe("invalid_credentials");
    expect.soft(results.lookups, "a patched Map.prototype.get: the refresh reaches the refresh endpoint").toBe("refreshed");
    expect.soft(results.lookupsToEcho, "a patched Map.prototype.get: nothing sent to the other origin").toBe("0");
    expect.soft(results.initGetter, "a getter on Object.prototype sees no init with the token").toBe("");
    expect.soft(results.decoy, "a decoy headers getter gets no token").toBe("null");
    expect.soft(results.viaRequest, "a decoy headers getter: the request still carries it").toMatch(/^DPoP ey/);
    expect(results.own, "the app's own requests still carry it").toMatch(/^DPoP ey/);
  });

  test("Object.prototype cannot choose the key a sign-in names, read a reply's token, or plant an exportable key", async ({ context }) => {
    const [tab] = await loggedInTabs(context, 1);
    // 1. A redirect sign-in: the page goes to the server's start with its key's thumbprint
    // (held here, before it leaves). A toJSON, or a `y` for a key that has none, on
    // Object.prototype would make it the attacker's key's.
    let started = "";
    await tab.route("**/auth/oidc/**", (route) => {
      started = route.request().url();
      return route.fulfill({ status: 204 }); // a navigation to a 204 stays on this page
    });
    const theirs = await tab.evaluate(async () => {
      const pair = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign"]);
      const { x, y } = await crypto.subtle.exportKey("jwk", pair.publicKey);
      const jwk = JSON.stringify({ crv: "P-256", kty: "EC", x, y });
      const hash = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(jwk)));
      const thumbprint = btoa(String.fromCharCode(...hash)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
      Object.defineProperty(Object.prototype, "toJSON", {
        configurable: true,
        value(this: any) { return "kty" in this && "x" in this ? { crv: "P-256", kty: "EC", x, y } : this; },
      });
      Object.defineProperty(Object.prototype, "y", { configurable: true, get: () => y });
      (window as any).auth.loginWithRedirect({ provider: "idp", returnTo: "/" });
      return thumbprint;
    });
    await expect.poll(() => started).toContain("dpop_jkt=");
    await tab.evaluate(() => {
      delete (Object.prototype as any).toJSON;
      delete (Object.prototype as any).y;
      sessionStorage.clear(); // (the sign-in it started is not coming back)
    });
    const named = new URL(started).searchParams.get("dpop_jkt");
    expect(named).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(named, "the sign-in names the page's own key").not.toBe(theirs);

    // 2. A getter on Object.prototype for a member a reply does not have (`error`): it would
    // run with the reply, the new token in it, as `this`.
    const r = await tab.evaluate(async () => {
      let glimpsed = "";
      Object.defineProperty(Object.prototype, "error", {
        configurable: true,
        get(this: any) { if (typeof this?.access_token === "string") glimpsed += this.access_token; return undefined; },
      });
      const refreshed = await (window as any).auth.refresh({ force: true }).then(() => "refreshed", (e: any) => e.code);
      delete (Object.prototype as any).error;
      return { refreshed, glimpsed };
    });
    expect(r.refreshed).toBe("refreshed");
    expect(r.glimpsed, "the getter saw no token").toBe("");

    // 3. An exportable key written where the client keeps the session's key: the next page
    // signs nothing with it (its refresh could otherwise be the attacker's to repeat anywhere).
    const planted = await tab.evaluate(async () => {
      const pair = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign"]);
      const { x } = await crypto.subtle.exportKey("jwk", pair.publicKey);
      const db = await new Promise<IDBDatabase>((ok) => { const r = indexedDB.open("tokenwarden"); r.onsuccess = () => ok(r.result); });
      const store = (mode: IDBTransactionMode) => db.transaction("keys", mode).objectStore("keys");
      // The live key's record, under the client's name for it ("tokenwarden <refresh URL>").
      const names = await new Promise<IDBValidKey[]>((ok) => { const q = store("readonly").getAllKeys(); q.onsuccess = () => ok(q.result); });
      const name = names.find((k) => String(k).startsWith("tokenwarden "))!;
      const h = btoa(JSON.stringify({ typ: "dpop+jwt", alg: "ES256", jwk: { crv: "P-256", kty: "EC", x, y: x } })).replace(/=+$/, "");
      await new Promise((ok) => { const q = store("readwrite").put({ k: pair.privateKey, h, t: "planted", at: Date.now() }, name); q.onsuccess = ok; });
      db.close();
      return x;
    });
    const proofs: string[] = [];
    tab.on("request", (q) => { const d = q.headers()["dpop"]; if (d) proofs.push(d); });
    await tab.reload();
    await tab.evaluate(() => (window as any).setup({}));
    await tab.evaluate(() => (window as any).auth.restore().catch(() => false));
    await tab.evaluate(() => (window as any).auth.fetch("/api/me").catch(() => null));
    const signedByIt = proofs.filter((p) => JSON.parse(Buffer.from(p.split(".")[0], "base64url").toString()).jwk?.x === planted);
    expect(signedByIt, "nothing signed by the planted key").toEqual([]);
  });

  test("WebAssembly and fetch patched after the package loaded: the core is still the package's own", async ({ context }) => {
    const tab = await openTab(context);
    const r = await tab.evaluate(async () => {
      // The package, loaded afresh (a module of its own), then patched before init(): another
      // module's bytes handed over, the core's exports wrapped.
      const m = await import("/pkg/tokenwarden.js?patched" as any);
      const calls: string[] = [];
      const { compile } = WebAssembly;
      const exports = Object.getOwnPropertyDescriptor(WebAssembly.Instance.prototype, "exports")!;
      const fetch0 = window.fetch;
      WebAssembly.compile = (b: any) => (calls.push("compile"), compile(b));
      Object.defineProperty(WebAssembly.Instance.prototype, "exports", {
        configurable: true,
        get() { calls.push("exports"); return exports.get!.call(this); },
      });
      window.fetch = (...a: any[]) => (calls.push(`fetch ${String(a[0]).split("/").pop()}`), fetch0(...(a as [any])));
      try {
        await m.default();
        const tm = new m.TokenManager({ crossTab: false });
        const restored = await tm.restore().catch((e: any) => e.name);
        tm.free();
        return { calls: calls.filter((c) => c === "compile" || c === "exports" || c.includes(".wasm")), restored };
      } finally {
        WebAssembly.compile = compile;
        Object.defineProperty(WebAssembly.Instance.prototype, "exports", exports);
        window.fetch = fetch0;
      }
    });
    expect(r.calls, "nothing of the core went through the patched globals").toEqual([]);
    expect(r.restored).toBe(false);
  });

  test("a redirect from an auth endpoint is not followed: the password and the proof stay", async ({ context }) => {
    const tab = await openTab(context);
    const { email, password } = await newUser();
    // The login endpoint answers 307 (a misconfigured proxy, an open redirect): a 307 resends
    // the body, the password in it, wherever it points. Followed, the request reaches the
    // other place (a path of this origin here, which answers: a LoginError for its reply);
    // refused, fetch fails before anything is resent: a NetworkError.
    await tab.route("**/auth/login", (route) =>
      route.fulfill({ status: 307, headers: { location: "/test/echo" } }));
    const outcome = await tab.evaluate((c) => (window as any).auth.login(c).then(() => "logged in", (e: any) => e.name), { email, password });
    expect(outcome, "the redirect was not followed").toBe("NetworkError");
  });

  test("a patched Map or Array index cannot swap the key a sign-in is signed with for an exportable one", async ({ context }) => {
    const tab = await openTab(context);
    const { email, password } = await newUser();
    const r = await tab.evaluate(async (c) => {
      const auth = (window as any).auth;
      // The attacker's key, exportable: a session bound to it would work anywhere.
      const pair = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign"]);
      let used = 0;
      const evil = (v: unknown) => Array.isArray(v) && typeof v[0] === "function"
        ? [() => (used++, Promise.resolve({ k: pair.privateKey, h: "", t: "", at: 0 })), ...v.slice(1)] : v;
      const { get, set } = Map.prototype;
      Map.prototype.set = function (k: unknown, v: unknown) { return set.call(this, k, evil(v)); };
      Map.prototype.get = function (k: unknown) { return evil(get.call(this, k)); };
      // And an index getter on Array.prototype for the place a key's promise would be missing
      // from a [load, given] entry.
      Object.defineProperty(Array.prototype, "2", {
        configurable: true,
        get() { return typeof this[0] === "function" && this.length === 2 ? evil(this)[0]() : undefined; },
        set() {},
      });
      let login;
      try {
        login = await auth.login(c).then(() => "logged in", (e: any) => `${e.name} ${e.code}`);
      } finally {
        Object.assign(Map.prototype, { get, set });
        delete (Array.prototype as any)["2"];
      }
      return { login, used, me: (await auth.fetch("/api/me")).status };
    }, { email, password });
    expect.soft(r.used, "the attacker's key signed nothing").toBe(0);
    expect(r.login).toBe("logged in");
    expect(r.me).toBe(200);
  });

  test("options put on Object.prototype before the TokenManager is built are not its options", async ({ context }) => {
    const tab = await openTab(context);
    const { email, password } = await newUser();
    const r = await tab.evaluate(async ({ c, evil, secret }) => {
      const define = (k: string, v: unknown) =>
        Object.defineProperty(Object.prototype, k, { configurable: true, get: () => v });
      // Unbound sessions, and the token for another origin too.
      define("dpop", false);
      define("allowedOrigins", [location.origin, evil]);
      try {
        await (window as any).setup({});
      } finally {
        delete (Object.prototype as any).dpop;
        delete (Object.prototype as any).allowedOrigins;
      }
      const auth = (window as any).auth;
      await auth.login(c);
      const res = await auth.fetch(evil + "/test/echo", { headers: { "x-test-hooks-secret": secret } });
      return { jkt: auth.claims()?.cnf?.jkt ?? null, evilSaw: (await res.json()).authorization };
    }, { c: { email, password }, evil: LONG, secret: HOOKS_SECRET });
    expect.soft(r.jkt, "the session is bound to the page's key").toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(r.evilSaw, "the other origin gets no token").toBeNull();
  });

  test("globals a script broke cost one command, never a hang or the core", async ({ context }) => {
    const [tab] = await loggedInTabs(context, 1, { refreshTimeoutMs: 1500 });
    const r = await tab.evaluate(async () => {
      const auth = (window as any).auth;
      const out: Record<string, unknown> = {};
      // 1. Errors a script made unbuildable: a refusal still reaches its caller.
      Object.defineProperty(Error.prototype, "code", { configurable: true, set() { throw 0; } });
      out.refused = await auth.login({ email: "nobody@example.com", password: "not-the-password" })
        .then(() => "logged in", (e: any) => `${e?.name} ${e?.code}`);
      delete (Error.prototype as any).code;
      // 2. Array.prototype.map answering with a length of 3 GB: the core's memory is asked for no
      // such thing (which would trap the module), and the session goes on.
      const map = Array.prototype.map;
      Array.prototype.map = function () { return [{ length: 3e9 }, { length: 3e9 }, { length: 3e9 }]; } as any;
      new BroadcastChannel("tokenwarden " + new URL("/auth/refresh", location.href).href)
        .postMessage({ t: "ask", at: Date.now() });
      await new Promise((r) => setTimeout(r, 100));
      Array.prototype.map = map;
      out.alive = auth.isAuthenticated;
      out.after = await (window as any).burst(1);
      // 3. A lock manager that returns nothing at all: the refresh still settles.
      await new Promise((r) => setTimeout(r, 2500));
      const request = LockManager.prototype.request;
      (LockManager.prototype as any).request = () => undefined;
      const t0 = performance.now();
      out.due = (await (window as any).burst(1))[0];
      out.dueMs = performance.now() - t0;
      LockManager.prototype.request = request;
      return out;
    });
    expect.soft(r.refused, "the wrong password is refused, not left hanging").toMatch(/invalid_credentials$/);
    expect.soft(r.alive, "the core lives on").toBe(true);
    expect.soft(r.after).toEqual([200]);
    expect.soft(["NetworkError", 200]).toContain(r.due);
    expect(r.dueMs as number).toBeLessThan(1500 + 1000);
  });

  test("the key store held forever: restore() and loginWithRedirect() settle within refreshTimeoutMs + 1 s", async ({ context }) => {
    const tab = await openTab(context, { refreshTimeoutMs: 1500 });
    const name = await NAME(tab);
    const r = await tab.evaluate(async (name) => {
      // A redirect sign-in that seems to come back (its key's name in sessionStorage), and a
      // transaction on the key store kept alive for ever.
      sessionStorage.setItem(name, "x");
      const db = await new Promise<IDBDatabase>((ok, no) => {
        const q = indexedDB.open("tokenwarden");
        q.onupgradeneeded = () => q.result.createObjectStore("keys");
        q.onsuccess = () => ok(q.result);
        q.onerror = () => no(q.error);
      });
      let holding = true;
      const store = db.transaction("keys", "readwrite").objectStore("keys");
      const again = () => { if (holding) store.get("x").onsuccess = again; };
      again();
      const t0 = performance.now();
      const outcome = await (window as any).auth.restore().then((v: unknown) => String(v), (e: any) => `${e.name} ${e.code}`);
      const ms = performance.now() - t0;
      // A redirect sign-in's new key cannot be stored either: an error, not a click that hangs.
      const t1 = performance.now();
      const redirect = await (window as any).auth.loginWithRedirect({ provider: "idp", returnTo: "/" })
        .then(() => "navigated", (e: any) => `${e.name} ${e.code}`);
      holding = false;
      return { outcome, ms, redirect, redirectMs: performance.now() - t1 };
    }, name);
    expect(r.outcome).toBe("NetworkError timeout");
    expect(r.ms).toBeLessThan(1500 + 1000);
    expect(r.redirect).toBe("NetworkError timeout");
    expect(r.redirectMs).toBeLessThan(1500 + 1000);
  });

  test("a lock manager patched to never answer: NetworkError within refreshTimeoutMs + 1 s, then it works", async ({ context }) => {
    const [tab] = await loggedInTabs(context, 1, { refreshTimeoutMs: 1500 });
    await sleep(UNTIL_DUE_MS);
    const r = await tab.evaluate(async () => {
      const request = LockManager.prototype.request;
      // Neither granted nor "held": no answer at all.
      LockManager.prototype.request = () => new Promise(() => {});
      const t0 = performance.now();
      const [status] = await (window as any).burst(1);
      const ms = performance.now() - t0;
      LockManager.prototype.request = request;
      return { status, ms };
    });
    expect(r.status).toBe("NetworkError");
    expect(r.ms).toBeLessThan(1500 + 1000);
    expect(await isAuthenticated(tab)).toBe(true);
    expect(await tab.evaluate(() => (window as any).burst(1))).toEqual([200]);
  });

  test("a Web Lock held forever: NetworkError within refreshTimeoutMs + 1 s, and the session survives", async ({ context }) => {
    const tabs = await loggedInTabs(context, 1, { refreshTimeoutMs: 1500 });
    const evil = await context.newPage();
    await evil.goto(new URL("/", tabs[0].url()).href + "?evil");
    const name = await NAME(tabs[0]);
    await evil.evaluate((name) => new Promise<void>((held) => {
      navigator.locks.request(name, () => { held(); return new Promise(() => {}); });
    }), name);
    await sleep(UNTIL_DUE_MS);
    const t0 = Date.now();
    const [status] = await tabs[0].evaluate(() => (window as any).burst(1));
    const waited = Date.now() - t0;
    expect(status).toBe("NetworkError");
    expect(waited).toBeLessThan(1500 + 1000);
    expect(await isAuthenticated(tabs[0])).toBe(true);
    // The holder goes away: the next request refreshes and works.
    await evil.close();
    expect(await tabs[0].evaluate(() => (window as any).burst(1))).toEqual([200]);
  });
});
