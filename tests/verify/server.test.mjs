// tokenwarden/verify against the real auth server (target/debug/tokenwarden-server, built with
// `cargo build -p tokenwarden-server --features test-hooks`): a real bound login, then requests
// to Express, Koa and Fastify APIs guarded by the verifier; nonces shared through the secret;
// key rotation; the revocation feed, its staleness and its reconnection.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import express from "express";
import Koa from "koa";
import Router from "@koa/router";
import Fastify from "fastify";
import { createVerifier } from "../../pkg/verify.js";
import { AuthServer, DpopClient, FEED_TOKEN, NONCE_SECRET, freePort, sleep } from "./helpers.mjs";

let server;
let offset = 0;
const now = () => Date.now() + offset;
const apps = {};
const verifiers = [];

async function listen(kind, verifier, port) {
  if (kind === "express") {
    const app = express();
    app.use(verifier.express());
    app.get("/api/data", (req, res) => res.json({ sub: req.auth.sub, sid: req.auth.sid }));
    return new Promise((r) => {
      const s = app.listen(port, "127.0.0.1", () => r(() => s.close()));
    });
  }
  if (kind === "koa") {
    const app = new Koa();
    const router = new Router();
    router.get("/api/data", (ctx) => (ctx.body = { sub: ctx.state.auth.sub, sid: ctx.state.auth.sid }));
    app.use(verifier.koa()).use(router.routes());
    return new Promise((r) => {
      const s = app.listen(port, "127.0.0.1", () => r(() => s.close()));
    });
  }
  const app = Fastify();
  app.addHook("onRequest", verifier.fastify());
  app.get("/api/data", async (request) => ({ sub: request.auth.sub, sid: request.auth.sid }));
  await app.listen({ port, host: "127.0.0.1" });
  return () => app.close();
}

async function waitFor(what, f, ms = 5000) {
  const until = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

const fresh = (v) => waitFor("the revocation feed's ready", () => v.revocations.status().staleForMs === 0 && v.revocations.status().connected);

async function send(url, { token, proof, scheme = "DPoP" } = {}) {
  const headers = {};
  if (token) headers.authorization = `${scheme} ${token}`;
  if (proof) headers.dpop = proof;
  const res = await fetch(url, { headers });
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {}
  return { status: res.status, headers: res.headers, json };
}

/** A request for verifier.verify() itself. */
function request(client, url, nonce) {
  const u = new URL(url);
  return {
    method: "GET",
    url: u.pathname,
    headers: { host: u.host, authorization: `DPoP ${client.token}`, dpop: client.proof("GET", url, { token: client.token, nonce }) },
  };
}

before(async () => {
  server = await new AuthServer().start();
  for (const kind of ["express", "koa", "fastify"]) {
    const port = await freePort();
    const origin = `http://127.0.0.1:${port}`;
    const verifier = await createVerifier({
      authServer: server.base,
      publicOrigin: origin,
      nonceSecret: NONCE_SECRET,
      revocationToken: FEED_TOKEN,
      now,
      // As an API up for a while: the auth server's current nonce (issued at its window's
      // start, before this verifier was made) is accepted. The default refuses nonces from
      // before the start (the last test).
      refuseNoncesBefore: 0,
    });
    verifiers.push(verifier);
    apps[kind] = { url: `${origin}/api/data`, verifier, close: await listen(kind, verifier, port) };
  }
  for (const { verifier } of Object.values(apps)) await fresh(verifier);
});

after(async () => {
  for (const { close } of Object.values(apps)) await close();
  for (const v of verifiers) v.close();
  await server?.close();
});

describe("a bound login's token at an API", () => {
  for (const kind of ["express", "koa", "fastify"]) {
    test(`${kind}: accepted with the auth server's nonce (shared secret); replayed, refused; without a nonce, use_dpop_nonce`, async () => {
      const client = new DpopClient();
      const token = await client.login(server);
      const { url } = apps[kind];
      const authNonce = client.nonces.get(server.base);
      assert.match(authNonce, /^[A-Za-z0-9_-]{43}$/);
      const proof = client.proof("GET", url, { token, nonce: authNonce });
      const ok = await send(url, { token, proof });
      assert.equal(ok.status, 200, JSON.stringify(ok.json));
      assert.equal(ok.json.sub.length > 0, true);
      assert.match(ok.headers.get("dpop-nonce"), /^[A-Za-z0-9_-]{43}$/, "DPoP-Nonce on a success too");

      const replay = await send(url, { token, proof });
      assert.equal(replay.status, 401);
      assert.deepEqual(replay.json, { error: "invalid_dpop_proof", error_description: "the DPoP proof was already used" });
      assert.equal(
        replay.headers.get("www-authenticate"),
        'DPoP realm="tokenwarden", algs="ES256 EdDSA Ed25519", error="invalid_dpop_proof", error_description="the DPoP proof was already used"',
      );
      assert.equal(replay.headers.get("cache-control"), "no-store");
      assert.match(replay.headers.get("content-type"), /^application\/json/);

      const noNonce = await send(url, { token, proof: client.proof("GET", url, { token }) });
      assert.equal(noNonce.status, 401);
      assert.equal(noNonce.json.error, "use_dpop_nonce");
      assert.match(noNonce.headers.get("www-authenticate"), /error="use_dpop_nonce"/);
      const nonce = noNonce.headers.get("dpop-nonce");
      assert.match(nonce, /^[A-Za-z0-9_-]{43}$/);
      const retried = await send(url, { token, proof: client.proof("GET", url, { token, nonce }) });
      assert.equal(retried.status, 200);

      // The verifier's nonce works at the auth server too (one secret), once it was issued after
      // the server started (a server on SQLite refuses every nonce issued before its start).
      const issued = (n) => Buffer.from(n, "base64url").readBigInt64BE(0);
      const me = await client.fetch("GET", `${server.base}/api/me`, { token, nonce, retry: false });
      if (issued(nonce) >= issued(authNonce)) assert.equal(me.status, 200, me.text);
      else assert.equal(me.json.error, "use_dpop_nonce", me.text);

      const none = await send(url);
      assert.equal(none.status, 401);
      assert.equal(none.json.error, "missing_token");
      assert.equal(none.headers.get("www-authenticate"), 'Bearer realm="tokenwarden", DPoP realm="tokenwarden", algs="ES256 EdDSA Ed25519"');

      const asBearer = await send(url, { token, scheme: "Bearer" });
      assert.equal(asBearer.status, 401);
      assert.equal(asBearer.json.error, "invalid_token");
    });
  }

  test("the same requests get the same answers from the auth server's own /api/me", async () => {
    const client = new DpopClient();
    const token = await client.login(server);
    const url = `${server.base}/api/me`;
    const nonce = client.nonces.get(server.base);
    const v = apps.express.verifier;
    const cases = [
      ["no nonce", () => client.proof("GET", url, { token })],
      ["another key", () => new DpopClient().proof("GET", url, { token, nonce })],
      ["wrong ath", () => client.proof("GET", url, { token: "x", nonce })],
      ["old iat", () => client.proof("GET", url, { token, nonce, iat: Math.floor(Date.now() / 1000) - 120 })],
      ["POST for GET", () => client.proof("POST", url, { token, nonce })],
    ];
    for (const [name, make] of cases) {
      const proof = make();
      const atServer = await send(url, { token, proof });
      let mine;
      try {
        // The API's view of the same request: its origin is the auth server's for this check.
        const local = await createVerifier({ authServer: server.base, publicOrigin: server.base, nonceSecret: NONCE_SECRET, refuseNoncesBefore: 0 });
        await local.verify({ method: "GET", url: "/api/me", headers: { host: new URL(url).host, authorization: `DPoP ${token}`, dpop: proof } });
        local.close();
        mine = { status: 200 };
      } catch (e) {
        mine = e;
      }
      assert.equal(mine.status, atServer.status, name);
      assert.equal(mine.code, atServer.json.error, name);
      assert.equal(mine.description, atServer.json.error_description, name);
      assert.equal([mine.headers["WWW-Authenticate"]].flat().join(", "), atServer.headers.get("www-authenticate"), name);
    }
    assert.ok(v);
  });
});

test("key rotation: a token of the new key is verified after the JWKS refetch (on the keys event, or on an unknown kid)", async () => {
  const noFeed = await createVerifier({ authServer: server.base, publicOrigin: apps.express.url.replace("/api/data", ""), nonceSecret: NONCE_SECRET, now, refuseNoncesBefore: 0 });
  verifiers.push(noFeed);
  // Not in the second the current key started: keys that start in the same second are ordered
  // by kid (server/src/keys.rs key_states), so the new one might not sign yet.
  await sleep(1010 - (Date.now() % 1000));
  const { kid } = await server.hook("POST", "/test/keys/rotate", {});
  const client = new DpopClient();
  const token = await client.login(server);
  assert.equal(JSON.parse(Buffer.from(token.split(".")[0], "base64url")).kid, kid);
  // With the feed: the keys event refetches at once.
  const { url } = apps.express;
  const accepted = await waitFor("the new key at the API", async () => {
    const r = await send(url, { token, proof: client.proof("GET", url, { token, nonce: client.nonces.get(server.base) }) });
    return r.status === 200 && r;
  });
  assert.equal(accepted.status, 200);
  // Without it: an unknown kid refetches, at most once per 10 s (the JWKS was fetched just now).
  const early = await noFeed.verify(request(client, url, client.nonces.get(server.base))).catch((e) => e);
  assert.equal(early.code, "invalid_token");
  assert.equal(early.description, "the token's signing key is unknown or revoked");
  offset += 11_000;
  const claims = await noFeed.verify(request(client, url, client.nonces.get(server.base)));
  assert.equal(claims.cnf.jkt, client.jkt);
  offset -= 11_000;
});

test("a logout at the auth server reaches the APIs through the revocation feed", async () => {
  const client = new DpopClient();
  const token = await client.login(server);
  const { url, verifier } = apps.koa;
  const ok = await send(url, { token, proof: client.proof("GET", url, { token, nonce: client.nonces.get(server.base) }) });
  assert.equal(ok.status, 200);
  const before = verifier.revocations.status().lastEventId;
  const out = await client.fetch("POST", `${server.base}/auth/logout`, { token, headers: { "x-tokenwarden": "1" } });
  assert.equal(out.status, 204, out.text);
  const refused = await waitFor("the revocation at the API", async () => {
    const r = await send(url, { token, proof: client.proof("GET", url, { token, nonce: client.nonces.get(server.base) }) });
    return r.status === 401 && r;
  }, 3000);
  assert.deepEqual(refused.json, { error: "invalid_token", error_description: "the token has been revoked" });
  assert.notEqual(verifier.revocations.status().lastEventId, before);
});

test("a feed that never got ready is stale: 503 with Retry-After (onStale refuse)", async () => {
  const v = await createVerifier({ authServer: server.base, publicOrigin: server.base, nonceSecret: NONCE_SECRET, revocationToken: "wrong-token-0123456789abcdef0123456789" });
  verifiers.push(v);
  const client = new DpopClient();
  await client.login(server);
  await sleep(100);
  const e = await v.verify(request(client, `${server.base}/api/data`, client.nonces.get(server.base))).catch((x) => x);
  assert.equal(e.status, 503);
  assert.equal(e.code, "temporarily_unavailable");
  assert.equal(e.headers["Retry-After"], "5");
  assert.equal(v.revocations.status().connected, false);
  assert.ok(v.revocations.status().staleForMs > 0);
});

test("the auth server goes away: stale after maxStalenessMs (refused, or accepted with onStale accept); it comes back: fresh again, resumed from Last-Event-ID", async () => {
  const origin = server.base;
  // Signed in before the verifiers start: a sign-in hashes a password, which on a loaded machine
  // could outlast the 800 ms of staleness allowed after the feed's `ready` (the next keepalive
  // is 15 s away).
  const client = new DpopClient();
  await client.login(server);
  const strict = await createVerifier({ authServer: origin, publicOrigin: origin, nonceSecret: NONCE_SECRET, revocationToken: FEED_TOKEN, maxStalenessMs: 800 });
  const lax = await createVerifier({ authServer: origin, publicOrigin: origin, nonceSecret: NONCE_SECRET, revocationToken: FEED_TOKEN, maxStalenessMs: 800, onStale: "accept" });
  verifiers.push(strict, lax);
  await fresh(strict);
  await fresh(lax);
  const url = `${origin}/api/data`;
  assert.ok(await strict.verify(request(client, url, strict.nonce())));
  await server.stop();
  await waitFor("the disconnection", () => !strict.revocations.status().connected);
  await sleep(1000);
  const e = await strict.verify(request(client, url, strict.nonce())).catch((x) => x);
  assert.equal(e.status, 503);
  assert.ok(strict.revocations.status().staleForMs > 0);
  const warn = console.warn;
  const warned = [];
  console.warn = (m) => warned.push(m);
  try {
    assert.ok(await lax.verify(request(client, url, lax.nonce())));
    assert.ok(await lax.verify(request(client, url, lax.nonce())));
  } finally {
    console.warn = warn;
  }
  assert.equal(warned.filter((m) => /stale/.test(m)).length, 1, "logged once");
  const last = strict.revocations.status().lastEventId;
  await server.start();
  await fresh(strict);
  const number = (id) => Number(id.split(".")[0]);
  assert.ok(number(strict.revocations.status().lastEventId) >= number(last));
  assert.ok(await strict.verify(request(client, url, strict.nonce())));
});

test("a proof accepted just before an API restarts is refused after it: nonces from before the start are", async () => {
  const client = new DpopClient();
  await client.login(server);
  const url = `${server.base}/api/data`;
  const first = await createVerifier({ authServer: server.base, publicOrigin: server.base, nonceSecret: NONCE_SECRET });
  verifiers.push(first);
  const req = request(client, url, first.nonce());
  assert.ok(await first.verify(req));
  first.close();
  await sleep(5); // the restart
  const second = await createVerifier({ authServer: server.base, publicOrigin: server.base, nonceSecret: NONCE_SECRET });
  verifiers.push(second);
  const e = await second.verify(req).catch((x) => x);
  assert.equal(e.status, 401);
  assert.equal(e.code, "use_dpop_nonce");
  assert.notEqual(e.headers["DPoP-Nonce"], first.nonce(), "a nonce of its own, issued after its start");
  assert.ok(await second.verify(request(client, url, e.headers["DPoP-Nonce"])));
});

test("a metadata document over 1 MiB is refused unread, and says so; padded within the cap, read as before (the JWKS is read by the same function)", async () => {
  const options = { authServer: server.base, publicOrigin: server.base, nonceSecret: NONCE_SECRET };
  // The JSON followed by 1 MiB of spaces, streamed with no Content-Length.
  await server.hook("POST", "/test/faults", { documents_padding_bytes: 1 << 20 });
  try {
    await assert.rejects(createVerifier(options), /oauth-authorization-server: an answer over 1048576 bytes/);
    await server.hook("POST", "/test/faults", { documents_padding_bytes: 100 * 1024 });
    const v = await createVerifier(options);
    verifiers.push(v);
    const client = new DpopClient();
    await client.login(server);
    assert.ok(await v.verify(request(client, `${server.base}/api/data`, v.nonce())));
  } finally {
    await server.hook("POST", "/test/faults", { documents_padding_bytes: 0 });
  }
});
