// `auth.authorize(method, url)`: the headers a request that does not go through fetch needs
// (src/web/tokenwarden.js). Run in Node against the built package (pkg/), Bearer (Node has no
// IndexedDB for a DPoP key; the DPoP proof is checked by the server in tests/browser.rs): a
// TokenManager is handed a token by another "tab" over BroadcastChannel, as a peer's refresh is
// adopted, then asked for headers.
//   node --test tests/driver/
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { initSync, TokenManager } from "../../pkg/tokenwarden.js";

initSync(readFileSync(fileURLToPath(new URL("../../pkg/tokenwarden_bg.wasm", import.meta.url))));

const BASE = "https://auth.example";
const API = "https://api.example";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
const token = (n) => {
  const iat = Math.floor(Date.now() / 1000);
  return `${b64({ alg: "EdDSA" })}.${b64({ sub: "u1", n, iat, exp: iat + 600 })}.c2ln`;
};

/** A TokenManager for BASE and API, holding `t` (handed over by a peer) unless `t` is null. */
async function managerWith(t) {
  const auth = new TokenManager({ baseUrl: BASE, allowedOrigins: [BASE, API], dpop: false, sessionHintCookie: null });
  const peer = new BroadcastChannel("tokenwarden " + BASE + "/auth/refresh");
  if (t) {
    peer.postMessage({ t: "token", kind: "refresh", token: t, lifetime: 600, at: Date.now() });
    for (let i = 0; i < 100 && !auth.isAuthenticated; i++) await sleep(5);
    assert.ok(auth.isAuthenticated, "the peer's token was adopted");
  }
  return { auth, peer, done: () => (peer.close(), auth.free()) };
}

test("an allowed origin gets the Authorization header; another origin, nothing", async () => {
  const t = token(1);
  const { auth, done } = await managerWith(t);
  try {
    assert.deepEqual((await auth.authorize("GET", `${API}/items?x=1`)).headers, { Authorization: `Bearer ${t}` });
    assert.deepEqual((await auth.authorize("post", new URL(`${BASE}/me`))).headers, { Authorization: `Bearer ${t}` });
    for (const url of ["https://evil.example/steal", "http://api.example/items", "https://api.example:8443/", "not a url", `${API}.evil.example/`]) {
      const a = await auth.authorize("GET", url);
      assert.deepEqual(a.headers, {}, url);
      assert.equal(await a.retry({ status: 401, headers: new Headers() }), null, url);
    }
  } finally {
    done();
  }
});

test("no token and the auth server unreachable: rejects as auth.fetch does", async () => {
  const { auth, done } = await managerWith(null);
  try {
    await assert.rejects(auth.fetch(`${API}/items`), { name: "NetworkError" });
    await assert.rejects(auth.authorize("GET", `${API}/items`), { name: "NetworkError" });
  } finally {
    done();
  }
});

test("retry: nothing for a status other than 401; for a 401 after another tab refreshed, that token, once", async () => {
  const t1 = token(1), t2 = token(2);
  const { auth, peer, done } = await managerWith(t1);
  try {
    const ok = await auth.authorize("GET", `${API}/items`);
    assert.equal(await ok.retry({ status: 200, headers: new Headers() }), null);
    // Used up by any answer: a later 401 of the same request is not replayed.
    assert.equal(await ok.retry({ status: 401, headers: new Headers() }), null);
    const refused = await auth.authorize("GET", `${API}/items`);
    assert.equal(await refused.retry({ status: 403, headers: new Headers() }), null);
    const a = await auth.authorize("GET", `${API}/items`);
    assert.deepEqual(a.headers, { Authorization: `Bearer ${t1}` });
    // Another tab refreshed meanwhile: the replay goes out with its token, and no refresh.
    peer.postMessage({ t: "token", kind: "refresh", token: t2, lifetime: 600, at: Date.now() });
    for (let i = 0; i < 100 && (await auth.getAccessToken()) !== t2; i++) await sleep(5);
    assert.deepEqual(await a.retry({ status: 401, headers: new Headers() }), { Authorization: `Bearer ${t2}` });
    // Once: a second 401 goes to the caller.
    assert.equal(await a.retry({ status: 401, headers: new Headers() }), null);
  } finally {
    done();
  }
});

test("the side entries' hooks (_post, _signIn) reach the auth server only: another origin named by a script gets nothing", async () => {
  const { createServer } = await import("node:http");
  const seen = [];
  const evil = createServer((req, res) => (seen.push(req.headers), res.end("{}")));
  await new Promise((r) => evil.listen(0, "127.0.0.1", r));
  const other = `http://127.0.0.1:${evil.address().port}`;
  const { auth, done } = await managerWith(token(1));
  try {
    for (const path of [`${other}/steal`, `//127.0.0.1:${evil.address().port}/steal`]) {
      await assert.rejects(auth._post(path, "{}"), { name: "ConfigError" }, path);
      await assert.rejects(auth._post(path, "{}", "GET", 1), { name: "ConfigError" }, path);
      await assert.rejects(auth._signIn("{}", path), { name: "ConfigError" }, path);
    }
    await sleep(50);
    assert.deepEqual(seen, [], "no request reached the other origin");
  } finally {
    done();
    evil.close();
  }
});

test("free(): a call still waiting and every later one reject with a ConfigError; none hangs", async () => {
  const t = token(1);
  const { auth, peer, done } = await managerWith(null);
  try {
    // Waiting on a refresh (the auth server is unreachable, but not yet refused).
    const waiting = [auth.getAccessToken(), auth.fetch(`${API}/items`)];
    auth.free();
    const pending = Symbol("pending");
    for (const p of waiting) {
      const got = await Promise.race([p.then(() => "resolved", (e) => e), sleep(2000).then(() => pending)]);
      assert.notEqual(got, pending, "a call waiting at free() never settled");
      assert.equal(got.name, "ConfigError");
      assert.equal(got.message, "bad call: freed");
    }
    // A peer's token after free() is not taken up, and every call rejects at once.
    peer.postMessage({ t: "token", kind: "refresh", token: t, lifetime: 600, at: Date.now() });
    await sleep(20);
    for (const call of [() => auth.getAccessToken(), () => auth.refresh(), () => auth.logout(), () => auth.restore(),
      () => auth.login({ email: "a@example.com", password: "p" }), () => auth.fetch(`${API}/items`),
      () => auth.authorize("GET", `${API}/items`)]) {
      const got = await Promise.race([call().then(() => "resolved", (e) => e), sleep(2000).then(() => pending)]);
      assert.equal(got?.name, "ConfigError", String(call));
    }
    assert.equal(auth.isAuthenticated, false);
    // Another origin: passed through untouched, as before.
    await assert.rejects(auth.fetch("http://127.0.0.1:9/x"), TypeError);
  } finally {
    done();
  }
});

test("free() with close and abort broken by a script: it returns, a call waiting still rejects, the channel is closed", async () => {
  const { auth, peer } = await managerWith(null);
  // (Not removeEventListener: Node's own BroadcastChannel.close calls it; browsers' does not.)
  const broken = [[BroadcastChannel.prototype, "close"], [AbortController.prototype, "abort"]];
  const kept = broken.map(([o, k]) => o[k]);
  try {
    const waiting = auth.getAccessToken();
    for (const [o, k] of broken) o[k] = () => { throw new Error("broken by a script"); };
    auth.free();
    broken.forEach(([o, k], i) => (o[k] = kept[i]));
    const got = await Promise.race([waiting.then(() => "resolved", (e) => e), sleep(2000).then(() => "pending")]);
    assert.equal(got?.name, "ConfigError", "a call waiting at free() settled with the ConfigError");
    assert.equal(got.message, "bad call: freed");
    await assert.rejects(auth.getAccessToken(), { name: "ConfigError" });
    // (Were the channel left open, this file's process would never exit.)
  } finally {
    broken.forEach(([o, k], i) => (o[k] = kept[i]));
    peer.close();
    auth.free();
  }
});

test("a second initSync (a script that imports the package too) does not swap the core", async () => {
  // A module with no exports at all: a TokenManager on it could not start.
  initSync(new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0]));
  const t = token(2);
  const { auth, done } = await managerWith(t);
  try {
    assert.deepEqual((await auth.authorize("GET", `${API}/x`)).headers, { Authorization: `Bearer ${t}` });
  } finally {
    done();
  }
});

test("free() while a request is out: its answer is the caller's", async () => {
  const { createServer } = await import("node:http");
  let release;
  const server = createServer((req, res) => {
    release = () => res.end(req.headers.authorization ?? "none");
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const api = `http://127.0.0.1:${server.address().port}`;
  const t = token(1);
  const auth = new TokenManager({ baseUrl: BASE, allowedOrigins: [api], dpop: false, sessionHintCookie: null });
  const peer = new BroadcastChannel("tokenwarden " + BASE + "/auth/refresh");
  try {
    peer.postMessage({ t: "token", kind: "refresh", token: t, lifetime: 600, at: Date.now() });
    for (let i = 0; i < 100 && !auth.isAuthenticated; i++) await sleep(5);
    const answer = auth.fetch(`${api}/items`);
    for (let i = 0; i < 200 && !release; i++) await sleep(5);
    assert.ok(release, "the request reached the server");
    auth.free();
    release();
    const res = await answer;
    assert.equal(res.status, 200);
    assert.equal(await res.text(), `Bearer ${t}`);
    // install() after free() leaves fetch alone.
    const f = globalThis.fetch;
    auth.install();
    assert.equal(globalThis.fetch, f);
  } finally {
    peer.close();
    auth.free();
    server.close();
  }
});
