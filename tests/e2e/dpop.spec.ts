// Stolen is not usable (issue 11): a script injected into a logged-in page, after the app
// loaded, that never reaches the app's TokenManager (kept in a module closure, site/app.js),
// takes every token, proof and key it can get — the cross-tab channel, patched Headers, the
// refresh endpoint called itself, a TokenManager of its own, every key in IndexedDB. Then,
// from Node (outside the browser), nothing it carried away authorizes GET /api/me: not at
// once, not 65 seconds later. The tokens live 10 minutes (server LONG), so it is DPoP that
// refuses them, never their expiry; a control session signed in Node shows the Node signer
// makes proofs the server accepts.
import { test, expect, type Page } from "@playwright/test";
import { BASE, LONG, UNTIL_DUE_MS, hook, newUser, reset, sleep, stats } from "./helpers";

const subtle = globalThis.crypto.subtle;
const ES256 = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
const b64u = (b: ArrayBuffer | Uint8Array | string) =>
  Buffer.from(typeof b === "string" ? Buffer.from(b) : new Uint8Array(b as ArrayBuffer)).toString("base64url");

/** A proof signed in Node with `key` (a private CryptoKey) whose public JWK is `jwk`. */
async function proof(key: CryptoKey, jwk: JsonWebKey, htm: string, htu: string, o: { token?: string; nonce?: string; iat: number }) {
  const header = b64u(JSON.stringify({ typ: "dpop+jwt", alg: "ES256", jwk: { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y } }));
  const claims: Record<string, unknown> = { jti: crypto.randomUUID(), htm, htu, iat: o.iat };
  if (o.nonce) claims.nonce = o.nonce;
  if (o.token) claims.ath = b64u(await subtle.digest("SHA-256", Buffer.from(o.token)));
  const input = header + "." + b64u(JSON.stringify(claims));
  return input + "." + b64u(await subtle.sign(ES256, key, Buffer.from(input)));
}

/** The server's current nonce and time (seconds), as any outsider can learn them. */
async function serverNow() {
  const res = await fetch(`${LONG}/healthz`);
  return { nonce: res.headers.get("dpop-nonce") ?? undefined, iat: Math.floor(Date.parse(res.headers.get("date")!) / 1000) };
}

/** GET /api/me from Node with these headers: status and the error of its challenge. */
async function me(headers: Record<string, string>) {
  const res = await fetch(`${LONG}/api/me`, { headers });
  const challenge = res.headers.get("www-authenticate") ?? "";
  return { status: res.status, error: /error="([a-z_]+)"/.exec(challenge)?.[1] ?? "" };
}

const claimsOf = (token: string) => JSON.parse(Buffer.from(token.split(".")[1], "base64url").toString());

// What the injected script does, in the page (serialized by Playwright: self-contained).
async function attack({ refreshUrl, meUrl }: { refreshUrl: string; meUrl: string }) {
  const loot = {
    tokens: [] as string[], seen: [] as string[], used: [] as { proof: string; token: string }[],
    presigned: [] as { proof: string; token: string; ahead: number }[], refresh: {} as Record<string, number>,
    keys: [] as { type: string; extractable: boolean; exportJwk: string; exportPkcs8: string }[],
    ownJwk: null as JsonWebKey | null, channelTokens: 0, ownManager: "", meWhilePatched: 0,
  };
  const w = window as any;
  // Route 2: every Headers.set/append and fetch from now on passes through the thief.
  for (const name of ["set", "append"] as const) {
    const orig = Headers.prototype[name];
    Headers.prototype[name] = function (this: Headers, k: string, v: string) {
      loot.seen.push(`${k}: ${v}`);
      return orig.call(this, k, v);
    };
  }
  const origFetch = window.fetch;
  window.fetch = function (this: unknown, i: RequestInfo | URL, init?: RequestInit) {
    loot.seen.push(`fetch ${String(i)} ${JSON.stringify(init?.headers ?? null)}`);
    return origFetch.call(this, i, init);
  } as typeof fetch;
  loot.meWhilePatched = await w.app.me();

  // Route 1: ask the channel.
  const ch = new BroadcastChannel("tokenwarden " + refreshUrl);
  ch.onmessage = (e) => {
    if (typeof e.data?.token === "string") loot.tokens.push(e.data.token), loot.channelTokens++;
  };
  ch.postMessage({ t: "ask" });
  await new Promise((r) => setTimeout(r, 300));
  ch.close();

  // Every key in IndexedDB.
  const b64u = (b: ArrayBuffer | string) => {
    const bytes = typeof b === "string" ? new TextEncoder().encode(b) : new Uint8Array(b);
    return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  };
  const ES256 = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
  let pageKey: CryptoKey | null = null;
  let pageJwk: JsonWebKey | null = null;
  const names = (await indexedDB.databases()).map((d) => d.name!);
  for (const name of names) {
    const db: IDBDatabase = await new Promise((ok, no) => {
      const r = indexedDB.open(name);
      r.onsuccess = () => ok(r.result);
      r.onerror = () => no(r.error);
    });
    for (const store of Array.from(db.objectStoreNames)) {
      const values: any[] = await new Promise((ok) => {
        const r = db.transaction(store).objectStore(store).getAll();
        r.onsuccess = () => ok(r.result);
      });
      const walk = async (v: any): Promise<void> => {
        if (v instanceof CryptoKey) {
          const attempt = (f: string) => crypto.subtle.exportKey(f as any, v).then(() => "exported", (e) => e.name);
          loot.keys.push({ type: v.type, extractable: v.extractable, exportJwk: await attempt("jwk"), exportPkcs8: await attempt("pkcs8") });
          if (v.type === "private") pageKey = v;
        } else if (typeof v === "string" && v.startsWith("eyJ")) {
          try { const h = JSON.parse(atob(v.replace(/-/g, "+").replace(/_/g, "/"))); if (h.jwk) pageJwk = h.jwk; } catch {}
        } else if (v && typeof v === "object") {
          for (const x of Object.values(v)) await walk(x);
        }
      };
      for (const v of values) await walk(v);
    }
    db.close();
  }
  const sign = async (key: CryptoKey, jwk: JsonWebKey, htm: string, htu: string, o: { token?: string; nonce?: string; iat: number }) => {
    // The page's key is Ed25519 (EdDSA proofs) where WebCrypto has it, else P-256.
    const ed = key.algorithm.name === "Ed25519";
    const header = b64u(JSON.stringify({ typ: "dpop+jwt", alg: ed ? "EdDSA" : "ES256", jwk: { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y } }));
    const claims: Record<string, unknown> = { jti: crypto.randomUUID(), htm, htu, iat: o.iat };
    if (o.nonce) claims.nonce = o.nonce;
    if (o.token) claims.ath = b64u(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(o.token)));
    const input = header + "." + b64u(JSON.stringify(claims));
    return input + "." + b64u(await crypto.subtle.sign(ed ? { name: "Ed25519" } : ES256, key, new TextEncoder().encode(input)));
  };
  const now = async () => {
    const r = await origFetch("/healthz");
    return { nonce: r.headers.get("dpop-nonce") ?? undefined, iat: Math.floor(Date.parse(r.headers.get("date")!) / 1000) };
  };

  // Route 3: POST /auth/refresh itself — without a proof, with its own key, with the page's key.
  const own = (await crypto.subtle.generateKey(ES256, true, ["sign", "verify"])) as CryptoKeyPair;
  loot.ownJwk = await crypto.subtle.exportKey("jwk", own.privateKey);
  const refresh = async (label: string, key?: CryptoKey, jwk?: JsonWebKey | null) => {
    const headers: Record<string, string> = { "X-Tokenwarden": "1" };
    if (key && jwk) headers.DPoP = await sign(key, jwk, "POST", refreshUrl, await now());
    const r = await origFetch(refreshUrl, { method: "POST", credentials: "include", headers });
    loot.refresh[label] = r.status;
    const body = await r.json().catch(() => ({}));
    if (typeof body.access_token === "string") loot.tokens.push(body.access_token);
  };
  await refresh("no proof");
  await refresh("own key", own.privateKey, loot.ownJwk);
  if (pageKey && pageJwk) await refresh("page key", pageKey, pageJwk);

  // Route 4: the package itself, a TokenManager of its own.
  try {
    const m = await import("/pkg/tokenwarden.js" as any);
    await m.default();
    const tm = new m.TokenManager();
    await tm.restore();
    loot.tokens.push(await tm.getAccessToken());
    tm.free();
    loot.ownManager = "token";
  } catch (e: any) {
    loot.ownManager = e?.name ?? String(e);
  }

  // Proofs made with the page's key: one used here (then carried away), and some pre-signed
  // for later (`ahead` seconds in the future), with the current nonce.
  if (pageKey && pageJwk) {
    for (const token of new Set(loot.tokens)) {
      const p = await sign(pageKey, pageJwk, "GET", meUrl, { token, ...(await now()) });
      const r = await origFetch(meUrl, { headers: { Authorization: "DPoP " + token, DPoP: p } });
      if (r.status === 200) loot.used.push({ proof: p, token });
      for (const ahead of [0, 30, 65]) {
        const t = await now();
        loot.presigned.push({ proof: await sign(pageKey, pageJwk, "GET", meUrl, { token, nonce: t.nonce, iat: t.iat + ahead }), token, ahead });
      }
    }
  }
  return loot;
}

test("a script injected into the page carries nothing away that works outside it", async ({ page }) => {
  test.setTimeout(180_000);
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  const user = await newUser(LONG);
  await page.goto(`${LONG}/app.html`);
  await expect(page).toHaveTitle("ready");
  expect(await page.evaluate(([e, p]) => (window as any).app.login(e, p), [user.email, user.password])).toBe(true);
  expect(await page.evaluate(() => (window as any).app.me())).toBe(200);

  const loot = await page.evaluate(attack, { refreshUrl: `${LONG}/auth/refresh`, meUrl: `${LONG}/api/me` });

  // What the script could do in the page: it got tokens (all bound) and could sign with the
  // page's key, but could not export it; nothing of the app's traffic passed its patches.
  expect(loot.meWhilePatched).toBe(200);
  expect(loot.channelTokens).toBeGreaterThan(0);
  expect(loot.ownManager).toBe("token");
  expect(loot.refresh["no proof"]).toBe(401);
  expect(loot.refresh["own key"]).toBe(401);
  expect(loot.refresh["page key"]).toBe(200);
  expect(loot.keys.filter((k) => k.type === "private")).toEqual([
    { type: "private", extractable: false, exportJwk: "InvalidAccessError", exportPkcs8: "InvalidAccessError" },
  ]);
  expect(loot.seen.filter((s) => /authorization|dpop|eyJ/i.test(s)), "the app's headers never pass a patched method").toEqual([]);
  const tokens = [...new Set(loot.tokens)];
  expect(tokens.length).toBeGreaterThanOrEqual(2);
  for (const t of tokens) expect(claimsOf(t).cnf?.jkt, "every token it got is bound to the page's key").toBeTruthy();
  expect(loot.used.length).toBe(tokens.length);

  // The app keeps working throughout.
  expect(await page.evaluate(() => (window as any).app.burst(20))).toEqual(Array(20).fill(200));
  await page.close();

  // Control: the Node signer makes proofs the server accepts (a session bound to a Node key).
  const control = (await subtle.generateKey(ES256, true, ["sign", "verify"])) as CryptoKeyPair;
  const controlJwk = await subtle.exportKey("jwk", control.publicKey);
  const other = await newUser(LONG);
  const login = await fetch(`${LONG}/auth/login`, {
    method: "POST",
    headers: { "content-type": "application/json", DPoP: await proof(control.privateKey, controlJwk, "POST", `${LONG}/auth/login`, await serverNow()) },
    body: JSON.stringify(other),
  });
  expect(login.status).toBe(200);
  const controlToken = (await login.json()).access_token as string;
  const controlMe = async () => me({
    Authorization: "DPoP " + controlToken,
    DPoP: await proof(control.privateKey, controlJwk, "GET", `${LONG}/api/me`, { token: controlToken, ...(await serverNow()) }),
  });
  expect(await controlMe()).toEqual({ status: 200, error: "" });

  // The thief's own key, as it carried it out.
  const ownKey = await subtle.importKey("jwk", loot.ownJwk!, ES256, false, ["sign"]);
  const thief = async (phase: string, presignedLater: number[]) => {
    for (const token of tokens) {
      expect(await me({ Authorization: "Bearer " + token }), `${phase}: as Bearer`).toEqual({ status: 401, error: "invalid_token" });
      const own = await proof(ownKey, loot.ownJwk!, "GET", `${LONG}/api/me`, { token, ...(await serverNow()) });
      expect(await me({ Authorization: "DPoP " + token, DPoP: own }), `${phase}: with its own key's proof`)
        .toEqual({ status: 401, error: "invalid_dpop_proof" });
    }
    for (const u of loot.used) {
      expect((await me({ Authorization: "DPoP " + u.token, DPoP: u.proof })).status, `${phase}: a proof used once`).toBe(401);
    }
    for (const p of loot.presigned.filter((p) => presignedLater.includes(p.ahead))) {
      expect((await me({ Authorization: "DPoP " + p.token, DPoP: p.proof })).status, `${phase}: pre-signed ${p.ahead} s ahead`).toBe(401);
    }
  };
  // At once: the proofs pre-signed for later are from the future (the ones for "now" are the
  // limit RFC 9449 leaves: usable until their nonce expires, tried below a minute later).
  await thief("at once", [30, 65]);
  // 65 seconds later: every nonce it knew has expired, so every pre-signed proof is dead, while
  // its tokens are still unexpired (10-minute tokens) and the control session still works. The
  // server's clock moved by its test hook (nonces, proofs' `iat`, tokens' `exp` and `Date` all
  // read it), not a minute of the suite waited for.
  await hook("POST", "/test/clock", { advance_secs: 65 }, LONG);
  await thief("65 s later", [0, 30, 65]);
  for (const p of loot.presigned) {
    // Signed for now: too old by then. Signed for later: its time has come, its nonce is gone.
    const error = p.ahead === 0 ? "invalid_dpop_proof" : "use_dpop_nonce";
    expect(await me({ Authorization: "DPoP " + p.token, DPoP: p.proof }), `pre-signed ${p.ahead} s ahead`).toEqual({ status: 401, error });
  }
  const later = await serverNow();
  for (const t of tokens) expect(claimsOf(t).exp, "its tokens are still unexpired").toBeGreaterThan(later.iat);
  expect(await controlMe()).toEqual({ status: 200, error: "" });
  expect(errors).toEqual([]);
});

// The page's clock hours off: `iat` comes from the server's `Date`, so at most the page's
// first proof is refused (stamped before the server's time was known) and sent once more.
for (const hours of [-3, 5]) {
  test(`a page clock ${hours} hours off: login, requests, refresh and logout work`, async ({ page }) => {
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    // Before the package loads (it captures Date.now then), as a wrong system clock would be.
    await page.addInitScript((off) => {
      const real = Date.now;
      Date.now = () => real() + off;
    }, hours * 3_600_000);
    const user = await newUser();
    await page.goto(`${BASE}/app.html`);
    await expect(page).toHaveTitle("ready");
    const skew = await page.evaluate(() => Date.now() - new Date().getTime());
    expect(Math.abs(skew - hours * 3_600_000)).toBeLessThan(1000);
    expect(await page.evaluate(([e, p]) => (window as any).app.login(e, p), [user.email, user.password])).toBe(true);
    expect(await page.evaluate(() => (window as any).app.burst(5))).toEqual(Array(5).fill(200));
    await reset();
    // The 4-second token falls due: one refresh, first time right (the server's time is known).
    await sleep(UNTIL_DUE_MS);
    expect(await page.evaluate(() => (window as any).app.burst(5))).toEqual(Array(5).fill(200));
    const s = await stats();
    expect(s.refresh_calls).toBe(1);
    expect(s.refresh_rotated).toBe(1);
    expect(await page.evaluate(() => (window as any).app.logout())).toBe(true);
    expect((await stats()).logouts).toBe(1);
    expect(errors).toEqual([]);
  });
}

/** The header of every DPoP proof `page` sends from now on, decoded. */
function proofHeaders(page: Page): any[] {
  const headers: any[] = [];
  page.on("request", (r) => {
    const p = r.headers()["dpop"];
    if (p) headers.push(JSON.parse(Buffer.from(p.split(".")[0], "base64url").toString()));
  });
  return headers;
}

/** A new user signed in on the app in `page`, then three requests to /api/me: the headers of
 * the proofs they carried. */
async function signInAndFetch(page: Page): Promise<any[]> {
  const headers = proofHeaders(page);
  const user = await newUser();
  await page.goto(`${BASE}/app.html`);
  await expect(page).toHaveTitle("ready");
  expect(await page.evaluate(([e, p]) => (window as any).app.login(e, p), [user.email, user.password])).toBe(true);
  expect(await page.evaluate(() => (window as any).app.burst(3))).toEqual(Array(3).fill(200));
  expect(headers.length).toBeGreaterThan(3);
  return headers;
}

// A browser whose WebCrypto has no Ed25519 (Chromium before 137, Firefox before 129, Safari
// before 17): the key is P-256 and the proofs ES256, which the server takes as well.
test("without Ed25519 in WebCrypto the key is P-256 and the proofs ES256", async ({ page }) => {
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  // Before the package loads (it captures generateKey then), as an older browser answers.
  await page.addInitScript(() => {
    const real = SubtleCrypto.prototype.generateKey;
    SubtleCrypto.prototype.generateKey = function (alg: any, ...rest: any[]) {
      if (alg?.name === "Ed25519") return Promise.reject(new DOMException("no Ed25519", "NotSupportedError"));
      return real.call(this, alg, ...rest);
    } as any;
  });
  for (const h of await signInAndFetch(page)) expect([h.alg, h.jwk.kty, h.jwk.crv]).toEqual(["ES256", "EC", "P-256"]);
  // Then a page whose browser has Ed25519 (as after a browser update, or for a key stored by a
  // version before EdDSA proofs): the stored P-256 key goes on signing ES256, the session on.
  // The first page closed: the next one refreshes itself (no peer hands it a token).
  const context = page.context();
  await page.close();
  const next = await context.newPage();
  next.on("pageerror", (e) => errors.push(String(e)));
  const headers = proofHeaders(next);
  await next.goto(`${BASE}/app.html`);
  await expect(next).toHaveTitle("ready");
  expect(await next.evaluate(() => (window as any).app.restore())).toBe(true);
  expect(await next.evaluate(() => (window as any).app.me())).toBe(200);
  expect(headers.length).toBeGreaterThanOrEqual(2);
  for (const h of headers) expect(h.alg).toBe("ES256");
  expect(errors).toEqual([]);
});

// Where WebCrypto has Ed25519 (this Chromium), the proofs are EdDSA.
test("with Ed25519 in WebCrypto the key is Ed25519 and the proofs EdDSA", async ({ page }) => {
  for (const h of await signInAndFetch(page)) {
    expect([h.alg, h.jwk.kty, h.jwk.crv, h.jwk.y]).toEqual(["EdDSA", "OKP", "Ed25519", undefined]);
  }
});
