// The revocation feed client and the replay stores, against a scripted auth server (a fetch
// that serves the corpus's metadata and JWKS and an event stream the test writes to).
import assert from "node:assert/strict";
import { generateKeyPairSync, sign } from "node:crypto";
import { test } from "node:test";
import { createVerifier, memoryReplayStore, ReplayStoreFullError } from "../../pkg/verify.js";
import { corpus } from "./corpus.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const caseNamed = (name) => corpus.cases.find((c) => c.name === name);
const bearerCase = caseNamed("valid unbound Bearer token when Bearer is allowed");
const boundCase = caseNamed("valid bound request");
const AUTH = "https://auth.example";
const SVC_TOKEN = "svc-token-0123456789abcdefghijklmnop";

/** A scripted auth server: `streams` are the feed connections, in order. */
function scripted() {
  const s = { streams: [], jwksFetches: 0 };
  s.fetch = async (url, init = {}) => {
    if (url === `${AUTH}/.well-known/oauth-authorization-server`)
      return Response.json({ issuer: "tokenwarden", jwks_uri: `${AUTH}/jwks`, tokenwarden_revocations_endpoint: `${AUTH}/feed` });
    if (url === `${AUTH}/jwks`) {
      s.jwksFetches++;
      s.jwksHeaders = init.headers;
      if (s.jwksDown) return new Response("", { status: 503 });
      // A test may hold the answer (a fetch in flight).
      await s.jwksGate;
      if (s.jwksLagging?.until > Date.now()) {
        s.jwksLagging.answers++;
        return Response.json(corpus.config.jwks);
      }
      return Response.json(s.jwks ?? corpus.config.jwks, { headers: { "cache-control": `max-age=${s.maxAge ?? 3600}` } });
    }
    if (url === `${AUTH}/feed`) {
      let controller;
      const body = new ReadableStream({ start: (c) => (controller = c) });
      const enc = new TextEncoder();
      const conn = {
        at: Date.now(),
        headers: init.headers,
        write: (text) => controller.enqueue(enc.encode(text)),
        end: () => controller.close(),
      };
      init.signal?.addEventListener("abort", () => {
        try {
          controller.error(new DOMException("aborted", "AbortError"));
        } catch {}
      });
      s.streams.push(conn);
      return new Response(body, { headers: { "content-type": "text/event-stream" } });
    }
    return new Response("", { status: 404 });
  };
  return s;
}

async function until(what, f, ms = 3000) {
  // On the monotonic clock: a test may mock `Date`.
  const end = performance.now() + ms;
  while (!f()) {
    if (performance.now() > end) throw new Error(`timed out: ${what}`);
    await sleep(5);
  }
}

const outcome = (p) => p.then(() => 200, (e) => `${e.status} ${e.code}${e.code === "invalid_token" ? ` (${e.description})` : ""}`);

/** A verifier following the scripted feed of `s` (30 s staleness), on a clock the test moves
 * (`t.clock`, ms), its warnings muted until `t.done()`. */
async function following(s) {
  const t = { clock: bearerCase.now * 1000 };
  const warn = console.warn;
  console.warn = () => {};
  t.v = await createVerifier({ authServer: AUTH, allowBearer: true, revocationToken: SVC_TOKEN, maxStalenessMs: 30_000, now: () => t.clock, fetch: s.fetch });
  t.done = () => {
    t.v.close();
    console.warn = warn;
  };
  return t;
}

/** The first feed connection of `s`, answered with `ready` (its id `n`), once `v` is current. */
async function current(s, v, n = 1) {
  await until("the first connection", () => s.streams.length === 1);
  const feed = s.streams[0];
  const fetched = s.jwksFetches;
  feed.write(`event: ready\nid: ${n}\ndata: {"cursor":${n}}\n\n`);
  await until("ready", () => v.revocations.status().staleForMs === 0);
  // Current only once the keys were fetched again: a key revoked before the snapshot (which
  // holds no keys event) is not left verifying.
  assert.equal(s.jwksFetches, fetched + 1);
  return feed;
}

test("the feed: stale until ready, revocations kept until `until`, keepalives keep it fresh, keys refetch the JWKS, reconnects with Last-Event-ID and backoff", async () => {
  const s = scripted();
  const t = await following(s);
  const v = t.v;
  try {
    await until("the first connection", () => s.streams.length === 1);
    const first = s.streams[0];
    assert.equal(first.headers.authorization, `Bearer ${SVC_TOKEN}`);
    assert.equal(first.headers.accept, "text/event-stream");
    assert.equal(first.headers["last-event-id"], undefined);
    const req = bearerCase.request;
    assert.equal(await outcome(v.verify(req)), "503 temporarily_unavailable", "stale before the first ready");

    // A snapshot, split at odd places, CRLF line ends, then ready.
    const until1 = bearerCase.now + 100;
    const snapshot = `event: revoked\r\nid: 7\r\ndata: {"kind":"session","id":"session-1","until":${until1}}\r\n\r\n: keepalive\r\n\r\nevent: ready\r\nid: 9\r\ndata: {"cursor":9}\r\n\r\n`;
    for (let i = 0; i < snapshot.length; i += 7) first.write(snapshot.slice(i, i + 7));
    await until("ready", () => v.revocations.status().staleForMs === 0);
    assert.deepEqual(v.revocations.status(), { connected: true, lastEventId: "9", staleForMs: 0 });
    assert.equal(await outcome(v.verify(req)), "401 invalid_token (the token has been revoked)");
    // `until` counts the auth server's leeway; the verifier keeps refusing for its own (5 s).
    // Through until + leeway, as the crate (`until >= now - leeway`).
    t.clock = (until1 + 5) * 1000;
    first.write(": keepalive\n\n");
    await sleep(20);
    assert.equal(await outcome(v.verify(req)), "401 invalid_token (the token has been revoked)");
    t.clock = (until1 + 6) * 1000;
    first.write(": keepalive\n\n");
    await sleep(20);
    assert.equal(await outcome(v.verify(req)), 200, "the revocation ended past until + leeway");

    // A token revocation (jti) as it happens.
    first.write(`event: revoked\nid: 10\ndata: {"kind":"token","id":"token-1","until":${until1 + 50}}\n\n`);
    await until("event 10", () => v.revocations.status().lastEventId === "10");
    assert.equal(await outcome(v.verify(req)), "401 invalid_token (the token has been revoked)");
    t.clock = (until1 + 50) * 1000;

    // Silence past maxStalenessMs: stale; a keepalive: fresh.
    t.clock += 30_001;
    assert.equal(await outcome(v.verify(req)), "503 temporarily_unavailable");
    assert.ok(v.revocations.status().staleForMs >= 1);
    first.write(": keepalive\n\n");
    await until("fresh", () => v.revocations.status().staleForMs === 0);

    // A key event refetches the JWKS at once (whatever its max-age).
    const before = s.jwksFetches;
    first.write(`event: keys\nid: 11\ndata: {"kid":"new"}\n\n`);
    await until("the JWKS refetch", () => s.jwksFetches === before + 1);

    // The stream ends: reconnect after 250 ms, then 500 ms, with Last-Event-ID.
    first.end();
    await until("the second connection", () => s.streams.length === 2);
    assert.equal(s.streams[1].headers["last-event-id"], "11");
    assert.ok(s.streams[1].at - Date.now() <= 0);
    s.streams[1].end();
    await until("the third connection", () => s.streams.length === 3);
    const gap1 = s.streams[1].at - first.at;
    const gap2 = s.streams[2].at - s.streams[1].at;
    assert.ok(gap1 >= 240 && gap2 >= 480, `backoff ${gap1} ms then ${gap2} ms`);
    // Fresh for maxStalenessMs after the last event even while disconnected.
    assert.equal(v.revocations.status().staleForMs, 0);
  } finally {
    t.done();
  }
  await sleep(50);
  const n = s.streams.length;
  await sleep(700);
  assert.equal(s.streams.length, n, "no reconnection after close()");
});

test("the keys are never taken from a shared cache, are fetched again at every connection's ready, and an id no server sends is not sent back", async () => {
  const s = scripted();
  const t = await following(s);
  const v = t.v;
  try {
    // A CDN in front of the JWKS must not answer with the copy that still lists a revoked key.
    assert.equal(s.jwksHeaders?.["cache-control"], "no-cache");
    const feed = await current(s, v, "4.tag-4");
    // Ids as the server writes them; anything else (a proxy's mangling) is not kept.
    feed.write(`event: revoked\nid: 5.Ab_-9\ndata: {"kind":"token","id":"t5","until":${bearerCase.now + 60}}\n\n`);
    await until("event 5", () => v.revocations.status().lastEventId === "5.Ab_-9");
    feed.write(`event: revoked\nid: 6 bad\ndata: {"kind":"token","id":"t6","until":${bearerCase.now + 60}}\n\n`);
    feed.write(`event: revoked\nid: 7.${"x".repeat(33)}\ndata: {"kind":"token","id":"t7","until":${bearerCase.now + 60}}\n\n: keepalive\n\n`);
    await sleep(30);
    assert.equal(v.revocations.status().lastEventId, "5.Ab_-9");
    // Back after an outage: a `keys` event sent meanwhile may not be in what it catches up with
    // (a snapshot again), so the keys are fetched when the new connection is ready.
    feed.end();
    await until("the second connection", () => s.streams.length === 2);
    assert.equal(s.streams[1].headers["last-event-id"], "5.Ab_-9");
    const before = s.jwksFetches;
    s.streams[1].write(`event: ready\nid: 9.tag-9\ndata: {"cursor":9}\n\n`);
    await until("the JWKS refetch", () => s.jwksFetches === before + 1);
    assert.equal(s.jwksHeaders?.["cache-control"], "no-cache");
  } finally {
    t.done();
  }
});

test("a JWKS served with max-age=0 is fetched again after 10 s, not for every request", async () => {
  const s = scripted();
  s.maxAge = 0;
  const t = await following(s);
  const v = t.v;
  try {
    await current(s, v);
    const fetched = s.jwksFetches;
    for (let i = 0; i < 5; i++) assert.equal(await outcome(v.verify(bearerCase.request)), 200);
    assert.equal(s.jwksFetches, fetched);
    t.clock += 10_000;
    assert.equal(await outcome(v.verify(bearerCase.request)), 200);
    assert.equal(s.jwksFetches, fetched + 1);
  } finally {
    t.done();
  }
});

test("after an outage the view is current at the new connection's ready, not at the first event of its catch-up", async () => {
  const s = scripted();
  const t = await following(s);
  const v = t.v;
  try {
    const req = bearerCase.request;
    await current(s, v, 5);
    assert.equal(await outcome(v.verify(req)), 200);
    // The feed goes down for a minute; meanwhile the token's session is revoked (event 7).
    s.streams[0].end();
    t.clock += 60_000;
    await until("the second connection", () => s.streams.length === 2);
    assert.equal(s.streams[1].headers["last-event-id"], "5");
    assert.equal(await outcome(v.verify(req)), "503 temporarily_unavailable");
    // The catch-up has begun (another revocation, a keepalive) but not reached event 7: the
    // view is not current yet, and the revoked session's token does not pass.
    s.streams[1].write(`event: revoked\nid: 6\ndata: {"kind":"token","id":"other","until":${bearerCase.now + 600}}\n\n: keepalive\n\n`);
    await until("event 6", () => v.revocations.status().lastEventId === "6");
    assert.equal(await outcome(v.verify(req)), "503 temporarily_unavailable");
    s.streams[1].write(`event: revoked\nid: 7\ndata: {"kind":"session","id":"session-1","until":${bearerCase.now + 600}}\n\nevent: ready\nid: 7\ndata: {"cursor":7}\n\n`);
    await until("ready again", () => v.revocations.status().staleForMs === 0);
    assert.equal(await outcome(v.verify(req)), "401 invalid_token (the token has been revoked)");
  } finally {
    t.done();
  }
});

test("after an outage the view is current again only once the keys are fetched again: one retired meanwhile verifies nothing", async () => {
  const s = scripted();
  const t = await following(s);
  const v = t.v;
  try {
    const req = bearerCase.request;
    await current(s, v);
    assert.equal(await outcome(v.verify(req)), 200);
    // The feed and the JWKS go down for a minute (a path attacker, an outage); meanwhile the
    // key that signed the token is retired.
    s.streams[0].end();
    t.clock += 60_000;
    await until("the second connection", () => s.streams.length === 2);
    assert.equal(await outcome(v.verify(req)), "503 temporarily_unavailable");
    const other = generateKeyPairSync("ed25519").publicKey.export({ format: "jwk" });
    s.jwks = { keys: [{ ...other, kid: "the-next-key", alg: "EdDSA", use: "sig" }] };
    let release;
    s.jwksGate = new Promise((r) => (release = r));
    const before = s.jwksFetches;
    // The feed comes back, the JWKS fetch is held: still stale, the retired key verifies
    // nothing.
    s.streams[1].write(`event: ready\nid: 2\ndata: {"cursor":2,"now":${Math.floor(t.clock / 1000)}}\n\n`);
    await until("the keys asked for", () => s.jwksFetches === before + 1);
    await sleep(20);
    assert.ok(v.revocations.status().staleForMs > 0);
    assert.equal(await outcome(v.verify(req)), "503 temporarily_unavailable");
    // The keys arrive: current, and the token of the retired key is refused.
    s.jwksGate = null;
    release();
    await until("current", () => v.revocations.status().staleForMs === 0);
    assert.equal(await outcome(v.verify(req)), "401 invalid_token (the token's signing key is unknown or revoked)");
  } finally {
    t.done();
  }
});

test("a revocation is kept through a wall clock set forward and back: never pruned on the clock alone", async (t) => {
  const start = (bearerCase.now + 300) * 1000;
  t.mock.timers.enable({ apis: ["Date"], now: start });
  const s = scripted();
  const warn = console.warn;
  console.warn = () => {};
  const v = await createVerifier({ authServer: AUTH, allowBearer: true, revocationToken: SVC_TOKEN, fetch: s.fetch });
  try {
    const feed = await current(s, v);
    const secs = () => Math.floor(Date.now() / 1000);
    feed.write(`event: revoked\nid: 2\ndata: {"kind":"session","id":"session-1","until":${secs() + 60}}\n\n: keepalive ${secs()}\n\n`);
    await until("event 2", () => v.revocations.status().lastEventId === "2");
    assert.equal(await outcome(v.verify(bearerCase.request)), "401 invalid_token (the token has been revoked)");
    // Set forward two minutes (past `until`): a request while it is.
    t.mock.timers.setTime(start + 120_000);
    feed.write(`: keepalive ${secs()}\n\n`);
    await sleep(20);
    assert.equal(await outcome(v.verify(bearerCase.request)), 200);
    // Set back: revoked again, as it is.
    t.mock.timers.setTime(start);
    feed.write(`: keepalive ${secs()}\n\n`);
    await sleep(20);
    assert.equal(await outcome(v.verify(bearerCase.request)), "401 invalid_token (the token has been revoked)");
  } finally {
    v.close();
    console.warn = warn;
  }
});

test("a CRLF split between two chunks is one line end: the revocation on that line is kept", async () => {
  const s = scripted();
  const v = await createVerifier({ authServer: AUTH, allowBearer: true, revocationToken: SVC_TOKEN, now: () => bearerCase.now * 1000, fetch: s.fetch });
  try {
    await until("the connection", () => s.streams.length === 1);
    const feed = s.streams[0];
    feed.write(`event: ready\r\nid: 1\r\ndata: {"cursor":1}\r\n\r\n`);
    await until("ready", () => v.revocations.status().staleForMs === 0);
    feed.write(`event: revoked\r\nid: 2\r`);
    await sleep(20);
    feed.write(`\ndata: {"kind":"session","id":"session-1","until":${bearerCase.now + 60}}\r`);
    await sleep(20);
    feed.write(`\n\r\n`);
    await until("event 2", () => v.revocations.status().lastEventId === "2");
    assert.equal(await outcome(v.verify(bearerCase.request)), "401 invalid_token (the token has been revoked)");
  } finally {
    v.close();
  }
});

test("a keys event whose JWKS refetch fails leaves the view stale (the old keys may hold the retired one) until a refetch succeeds", async () => {
  const s = scripted();
  const t = await following(s);
  const v = t.v;
  try {
    const feed = await current(s, v);
    assert.equal(await outcome(v.verify(bearerCase.request)), 200);
    s.jwksDown = true;
    const before = s.jwksFetches;
    feed.write(`event: keys\nid: 2\ndata: {"kid":"retired"}\n\n`);
    await until("the refetch", () => s.jwksFetches === before + 1);
    await until("stale", () => v.revocations.status().staleForMs > 0);
    assert.equal(await outcome(v.verify(bearerCase.request)), "503 temporarily_unavailable");
    // The JWKS answers again: the next refetch (here the next keys event's) makes it current.
    s.jwksDown = false;
    feed.write(`event: keys\nid: 3\ndata: {"kid":"retired"}\n\n`);
    await until("fresh", () => v.revocations.status().staleForMs === 0);
    assert.equal(await outcome(v.verify(bearerCase.request)), 200);
  } finally {
    t.done();
  }
});

test("a keys event while a JWKS fetch is in flight fetches once more after it (the one in flight may predate the change)", async () => {
  const s = scripted();
  const v = await createVerifier({ authServer: AUTH, allowBearer: true, revocationToken: SVC_TOKEN, fetch: s.fetch });
  try {
    const feed = await current(s, v);
    let release;
    s.jwksGate = new Promise((r) => (release = r));
    const before = s.jwksFetches;
    feed.write(`event: keys\nid: 2\ndata: {"kid":"a"}\n\n`);
    await until("a fetch in flight", () => s.jwksFetches === before + 1);
    // Meanwhile the view stays current: a key rotation costs no request a 503.
    assert.equal(v.revocations.status().staleForMs, 0);
    // The key ring changes again while that fetch is out.
    feed.write(`event: keys\nid: 3\ndata: {"kid":"b"}\n\n`);
    await until("event 3", () => v.revocations.status().lastEventId === "3");
    s.jwksGate = null;
    release();
    await until("a fetch after the one in flight", () => s.jwksFetches === before + 2);
  } finally {
    v.close();
  }
});

test("a keys event fetches the JWKS again 6 s later: an instance behind the load balancer that had not heard of the change answered the first fetch", async () => {
  const s = scripted();
  const t = await following(s);
  const v = t.v;
  try {
    const feed = await current(s, v);
    assert.equal(await outcome(v.verify(bearerCase.request)), 200);
    // The key ring after the revocation: another key only. The instance answering in the next
    // half second still serves the list as it was.
    const other = generateKeyPairSync("ed25519").publicKey.export({ format: "jwk" });
    s.jwks = { keys: [{ ...other, kid: "the-next-key", alg: "EdDSA", use: "sig" }] };
    s.jwksLagging = { until: Date.now() + 500, answers: 0 };
    const since = Date.now();
    feed.write(`event: keys\nid: 2\ndata: {"kid":"revoked"}\n\n`);
    await until("the lagging answer", () => s.jwksLagging.answers === 1);
    assert.equal(await outcome(v.verify(bearerCase.request)), 200);
    await until("the second fetch", () => s.jwksFetches >= 4, 10_000);
    await until("the refetch applied", () => v.revocations.status().staleForMs === 0);
    assert.match(await outcome(v.verify(bearerCase.request)), /^401 invalid_token/);
    assert.ok(Date.now() - since >= 5900, `${Date.now() - since} ms`);
  } finally {
    t.done();
  }
});

test("a feed held back on its way is as stale as it is late: its ready and keepalives say when the auth server sent them", async () => {
  const s = scripted();
  const t = await following(s);
  const v = t.v;
  const secs = () => Math.floor(t.clock / 1000);
  try {
    await until("the first connection", () => s.streams.length === 1);
    const feed = s.streams[0];
    // Sent 40 s before it arrives (a relay forwarding the stream late): past the 30 s allowed.
    feed.write(`event: ready\nid: 1\ndata: {"cursor":1,"now":${secs() - 40}}\n\n`);
    await until("the ready", () => v.revocations.status().lastEventId === "1");
    await until("the keys fetched at it", () => s.jwksFetches === 2);
    await sleep(20);
    assert.ok(v.revocations.status().staleForMs > 0);
    assert.equal(await outcome(v.verify(bearerCase.request)), "503 temporarily_unavailable");
    // A keepalive on time: current. One 35 s late: stale again, and an event (which carries no
    // time) does not make it current.
    feed.write(`: keepalive ${secs()}\n\n`);
    await until("current", () => v.revocations.status().staleForMs === 0);
    feed.write(`: keepalive ${secs() - 35}\n\n`);
    await until("stale", () => v.revocations.status().staleForMs > 0);
    feed.write(`event: revoked\nid: 2\ndata: {"kind":"token","id":"t2","until":${secs() + 60}}\n\n`);
    await until("event 2", () => v.revocations.status().lastEventId === "2");
    assert.ok(v.revocations.status().staleForMs > 0);
    // A comment without a time, on a connection whose server gives one (something on the way
    // adding its own): nothing. A keepalive on time: current again.
    feed.write(`: keepalive\n\n: ping\n\n`);
    feed.write(`event: revoked\nid: 3\ndata: {"kind":"token","id":"t3","until":${secs() + 60}}\n\n`);
    await until("event 3", () => v.revocations.status().lastEventId === "3");
    assert.ok(v.revocations.status().staleForMs > 0);
    feed.write(`: keepalive ${secs()}\n\n`);
    await until("current again", () => v.revocations.status().staleForMs === 0);
  } finally {
    t.done();
  }
});

test("a wall clock set forward makes no view stale, and one set back keeps no silent feed's view fresh: the view's age is on a monotonic clock", async (t) => {
  // The wall clock (mocked `Date`) starts 300 s into the token's life; timers run as they do.
  const start = (bearerCase.now + 300) * 1000;
  t.mock.timers.enable({ apis: ["Date"], now: start });
  const s = scripted();
  const warn = console.warn;
  console.warn = () => {};
  const v = await createVerifier({ authServer: AUTH, allowBearer: true, revocationToken: SVC_TOKEN, maxStalenessMs: 1000, fetch: s.fetch });
  try {
    await current(s, v);
    assert.equal(await outcome(v.verify(bearerCase.request)), 200);
    // Set forward 200 s (an NTP step): the feed was heard a moment ago, not 200 s ago.
    t.mock.timers.setTime(start + 200_000);
    assert.equal(await outcome(v.verify(bearerCase.request)), 200);
    assert.equal(v.revocations.status().staleForMs, 0);
    // Set back 500 s, and the feed silent past the 1 s allowed (its connection lost without a
    // word): stale, as it is, not fresh for another 500 s by the wall clock.
    t.mock.timers.setTime(start - 300_000);
    await sleep(1200);
    assert.ok(v.revocations.status().staleForMs > 0);
    assert.equal(await outcome(v.verify(bearerCase.request)), "503 temporarily_unavailable");
    // The feed heard again (a keepalive with the auth server's time, on the clock set back):
    // current.
    s.streams[0].write(`: keepalive ${Math.floor(Date.now() / 1000)}\n\n`);
    await until("current again", () => v.revocations.status().staleForMs === 0);
    assert.equal(await outcome(v.verify(bearerCase.request)), 200);
  } finally {
    v.close();
    console.warn = warn;
  }
});

test("no revocationToken while the auth server has a feed: said once at the start; null: meant, said nowhere", async () => {
  const warned = [];
  const warn = console.warn;
  console.warn = (m) => warned.push(m);
  try {
    const s = scripted();
    const left = await createVerifier({ authServer: AUTH, allowBearer: true, now: () => bearerCase.now * 1000, fetch: s.fetch });
    assert.equal(await outcome(left.verify(bearerCase.request)), 200);
    left.close();
    assert.equal(warned.filter((m) => /no revocationToken/.test(m)).length, 1);
    const meant = await createVerifier({ authServer: AUTH, allowBearer: true, revocationToken: null, now: () => bearerCase.now * 1000, fetch: s.fetch });
    assert.equal(await outcome(meant.verify(bearerCase.request)), 200, "no feed, nothing stale");
    meant.close();
    assert.equal(warned.length, 1);
    assert.equal(s.streams.length, 0, "neither subscribed");
  } finally {
    console.warn = warn;
  }
});

test("a connection that goes quiet (no keepalive for 45 s) is given up and made again", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const s = scripted();
  const v = await createVerifier({ authServer: AUTH, allowBearer: true, revocationToken: SVC_TOKEN, fetch: s.fetch });
  // The timers are mocked: the event loop is turned by hand.
  const turns = async () => {
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
  };
  try {
    await turns();
    assert.equal(s.streams.length, 1);
    s.streams[0].write(`event: ready\nid: 1\ndata: {"cursor":1}\n\n`);
    await turns();
    t.mock.timers.tick(44_000);
    await turns();
    s.streams[0].write(": keepalive\n\n");
    await turns();
    t.mock.timers.tick(44_000);
    await turns();
    assert.equal(s.streams.length, 1, "heard within 45 s each time");
    t.mock.timers.tick(1_001);
    await turns();
    t.mock.timers.tick(250); // the reconnection's backoff
    await turns();
    assert.equal(s.streams.length, 2, "given up after 45 s of silence, and made again");
    assert.equal(s.streams[1].headers["last-event-id"], "1");
  } finally {
    v.close();
  }
});

test("onStale accept: a stale view accepts, and says so once", async () => {
  const s = scripted();
  const warned = [];
  const warn = console.warn;
  console.warn = (m) => warned.push(m);
  const v = await createVerifier({ authServer: AUTH, allowBearer: true, revocationToken: SVC_TOKEN, onStale: "accept", now: () => bearerCase.now * 1000, fetch: s.fetch });
  try {
    assert.equal(await outcome(v.verify(bearerCase.request)), 200);
    assert.equal(await outcome(v.verify(bearerCase.request)), 200);
    assert.equal(warned.filter((m) => /stale/.test(m)).length, 1);
  } finally {
    v.close();
    console.warn = warn;
  }
});

test("a revocation token without a feed in the metadata is a configuration error", async () => {
  const fetch = async (url) =>
    url.endsWith("oauth-authorization-server") ? Response.json({ issuer: "tokenwarden", jwks_uri: `${AUTH}/jwks` }) : Response.json(corpus.config.jwks);
  await assert.rejects(createVerifier({ authServer: AUTH, revocationToken: SVC_TOKEN, fetch }), /tokenwarden_revocations_endpoint/);
});

test("a feed event over 64 KiB (or of 64 Ki empty data lines) is dropped with its connection, never held (the crate's bound)", async () => {
  const s = scripted();
  const warn = console.warn;
  const warned = [];
  console.warn = (m) => warned.push(String(m));
  const v = await createVerifier({ authServer: AUTH, allowBearer: true, revocationToken: SVC_TOKEN, fetch: s.fetch });
  try {
    await until("connected", () => s.streams.length === 1);
    // One line that never ends, in small chunks: the verifier gives up at 64 KiB and reconnects.
    // A catch-up of many whole events in one chunk, far over 64 KiB together, is read whole.
    const many = Array.from({ length: 2000 }, (_, i) => `event: revoked\nid: ${i + 1}\ndata: {"kind":"token","id":"t-${i}","until":4102444800}\n\n`).join("");
    assert.ok(many.length > 128 * 1024, String(many.length));
    s.streams[0].write(many);
    await sleep(100);
    assert.deepEqual(warned, [], "read whole, no error");
    assert.equal(s.streams.length, 1, "still the first connection");
    for (let i = 0; i < 70; i++) s.streams[0].write(`data: ${"x".repeat(1018)}`);
    await until("reconnected", () => s.streams.length === 2);
    assert.ok(warned.some((m) => /over 64 KiB/.test(m)), warned.join("\n"));
    // Every event of the catch-up was read: the next connection resumes after the last.
    assert.equal(s.streams[1].headers["last-event-id"], "2000");
    // No data at all, but a line each: 70 Ki empty `data:` lines of one event count as much.
    for (let i = 0; i < 70; i++) s.streams[1].write("data:\n".repeat(1024));
    await until("reconnected again", () => s.streams.length === 3);
    assert.equal(warned.filter((m) => /over 64 KiB/.test(m)).length, 2, warned.join("\n"));
  } finally {
    v.close();
    console.warn = warn;
  }
});

test("options are checked", async () => {
  const s = scripted();
  await assert.rejects(createVerifier({ authServer: AUTH, leewaySecs: 31, fetch: s.fetch }), /leewaySecs/);
  await assert.rejects(createVerifier({ authServer: AUTH, nonceSecret: "short", fetch: s.fetch }), /32 bytes/);
  await assert.rejects(createVerifier({ authServer: AUTH, publicOrigin: "https://a.example/path", fetch: s.fetch }), /origin/);
  await assert.rejects(createVerifier({ fetch: s.fetch }), /authServer/);
  // A staleness that is no number of milliseconds would leave the view always stale (NaN, a
  // negative number) or never (Infinity), without a word.
  for (const maxStalenessMs of [NaN, -1, Infinity, "30000", null])
    await assert.rejects(createVerifier({ authServer: AUTH, maxStalenessMs, fetch: s.fetch }), { name: "RangeError", message: /maxStalenessMs/ });
  // A misspelt option is an error, not its default.
  await assert.rejects(createVerifier({ authServer: AUTH, publicOrigins: ["https://api.example"], fetch: s.fetch }), {
    name: "TypeError",
    message: /unknown option "publicOrigins"/,
  });
});

test("keys come over https or from this machine: a plain-http auth server or JWKS elsewhere is refused before a key is fetched", async () => {
  // A network attacker between the API and a plain-http auth server would hand the API keys of
  // their own, and every token they sign would verify.
  const asked = [];
  const at = (auth, jwks) => async (url) => {
    asked.push(url);
    return url.endsWith("oauth-authorization-server") ? Response.json({ issuer: "tokenwarden", jwks_uri: jwks }) : Response.json(corpus.config.jwks);
  };
  for (const auth of ["http://auth.example", "http://10.0.0.5:8080", "http://localhost.evil.example"]) {
    await assert.rejects(createVerifier({ authServer: auth, fetch: at(auth, `${auth}/jwks`) }), /plain http/);
  }
  assert.deepEqual(asked, [], "nothing fetched");
  await assert.rejects(createVerifier({ authServer: AUTH, fetch: at(AUTH, "http://keys.example/jwks") }), /http:\/\/keys\.example\/jwks: .*plain http/);
  assert.ok(!asked.includes("http://keys.example/jwks"), "the plain-http JWKS is never fetched");
  // This machine, a JWKS on the auth server's own origin, or a plain-http network allowed.
  for (const [auth, opts] of [["http://127.0.0.1:8080", {}], ["http://localhost:8080", {}], ["http://auth.internal", { allowInsecureHttp: true }]]) {
    const v = await createVerifier({ authServer: auth, fetch: at(auth, `${auth}/jwks`), ...opts });
    v.close();
  }
  const v = await createVerifier({ authServer: AUTH, fetch: at(AUTH, "https://cdn.example/jwks") });
  v.close();
  // Allowed, for the JWKS the metadata names too (its public origin, on the private network).
  const w = await createVerifier({ authServer: "http://auth:8080", allowInsecureHttp: true, fetch: at("http://auth:8080", "http://10.0.0.5:8080/jwks") });
  w.close();
});

test("a million revocations in force is a bound: one more is not kept and the view is stale (fail closed) until it no longer matters, pruned once a second at most", async () => {
  const s = scripted();
  const t = await following(s);
  const v = t.v;
  // Counts the steps of every Map iteration: what a walk over the revocations costs.
  const proto = Object.getPrototypeOf(new Map().entries());
  const next = proto.next;
  let steps = 0;
  try {
    const feed = await current(s, v);
    const base = bearerCase.now;
    for (let i = 0; i < 1_000_000; i++) v.revocations.add("session", `s${i}`, i < 10 ? base + 1 : base + 1000);
    assert.equal(await outcome(v.verify(bearerCase.request)), 200);
    proto.next = function () {
      steps++;
      return next.call(this);
    };
    // Full, none ended: not kept (before, kept anyway), and the view is stale.
    for (let i = 0; i < 100; i++) v.revocations.add("token", `t${i}`, base + 1000);
    proto.next = next;
    // One walk, not none (an engine whose iteration skipped the patched next would count 0 and
    // hide a walk per revocation), and not a hundred.
    assert.ok(steps >= 1_000_000 && steps <= 1_000_100, `${steps} steps: one walk for 100 revocations in one second`);
    assert.ok(v.revocations.status().staleForMs >= 1, "stale while one could not be kept");
    assert.equal(await outcome(v.verify(bearerCase.request)), "503 temporarily_unavailable");
    // Later, ten have ended (and the leeway passed): room again, but the view stays stale
    // while the ones dropped could be presented (no resumption sends them again)...
    t.clock += 10_000;
    for (let i = 0; i < 10; i++) v.revocations.add("token", `u${i}`, base + 20);
    assert.ok(v.revocations.status().staleForMs >= 1, "stale while a dropped one matters");
    // ...until their time and the leeway have passed: current again (at the next keepalive).
    t.clock = (base + 1000 + 6) * 1000;
    feed.write(": keepalive\n\n");
    await until("current again", () => v.revocations.status().staleForMs === 0);
  } finally {
    proto.next = next;
    t.done();
  }
});

test("memoryReplayStore: a replay is false, full of live entries it refuses (never forgets), room again after expiry", async () => {
  let t = 1_000_000;
  const store = memoryReplayStore({ max: 3, now: () => t });
  assert.equal(await store.claim("a", 1100), true);
  assert.equal(await store.claim("a", 1100), false);
  assert.equal(await store.claim("b", 1100), true);
  assert.equal(await store.claim("c", 1100), true);
  await assert.rejects(store.claim("d", 1100), ReplayStoreFullError);
  assert.equal(await store.claim("a", 1100), false, "still remembered");
  t = 1_101_000;
  assert.equal(await store.claim("d", 1200), true);
  assert.equal(store.size, 1);
});

test("memoryReplayStore: a proof is kept through a wall clock set forward and back (the routine prune goes no further than the time passed)", async (t) => {
  const start = 1_800_000_000_000;
  t.mock.timers.enable({ apis: ["Date"], now: start });
  const store = memoryReplayStore({ max: 100 });
  const secs = () => Math.floor(Date.now() / 1000);
  assert.equal(await store.claim("a", secs() + 61), true);
  // Set forward past its `until`: a claim there prunes.
  t.mock.timers.setTime(start + 200_000);
  assert.equal(await store.claim("b", secs() + 61), true);
  // Set back: still a replay.
  t.mock.timers.setTime(start + 5_000);
  assert.equal(await store.claim("a", secs() + 61), false);
  // Full, the clock decides alone: room for new proofs after a clock step.
  const full = memoryReplayStore({ max: 2 });
  t.mock.timers.setTime(start);
  await full.claim("x", secs() + 61);
  await full.claim("y", secs() + 61);
  t.mock.timers.setTime(start + 200_000);
  assert.equal(await full.claim("z", secs() + 61), true);
});

test("memoryReplayStore kept full: a claim does not walk the whole store (only the expired entries, once a second)", async () => {
  // Counts the steps of every Map and Array iteration: what a scan of the store costs.
  const protos = [new Map().entries(), [].values()].map((i) => Object.getPrototypeOf(i));
  const nexts = protos.map((p) => p.next);
  let steps = 0;
  const counting = (next) =>
    function () {
      steps++;
      return next.call(this);
    };
  const max = 10_000;
  let t = 1_000_000;
  const store = memoryReplayStore({ max, now: () => t });
  for (let i = 0; i < max; i++) assert.equal(await store.claim(`k${i}`, 1060), true);
  try {
    const refusals = [];
    const claim = (key, until) => store.claim(key, until).catch((e) => refusals.push(e));
    protos.forEach((p, i) => (p.next = counting(nexts[i])));
    for (let i = 0; i < 200; i++) await claim(`x${i}`, 1060);
    t += 1000;
    for (let i = 0; i < 200; i++) await claim(`y${i}`, 1061);
    const full = steps;
    // Past their expiry the entries are forgotten, each visited once.
    t = 1_061_000;
    await claim("z", 1121);
    protos.forEach((p, i) => (p.next = nexts[i]));
    assert.ok(full < 100, `${full} iteration steps for 400 claims on a full store of ${max}`);
    assert.ok(steps < max + 100, `${steps} steps`);
    // The count counts: forgetting the expired entries visited each of them.
    assert.ok(steps - full >= max, `${steps - full} steps to forget ${max} entries`);
    assert.equal(refusals.length, 400);
    assert.ok(refusals.every((e) => e instanceof ReplayStoreFullError));
    assert.equal(store.size, 1);
  } finally {
    protos.forEach((p, i) => (p.next = nexts[i]));
  }
});

test("the nonce secret is trimmed, as the auth server reads its file: one read with its newline takes the server's nonces", async () => {
  const c = boundCase;
  const options = (nonceSecret) => ({ authServer: AUTH, publicOrigin: corpus.config.public_origins, nonceSecret, now: () => c.now * 1000, refuseNoncesBefore: 0, fetch: scripted().fetch });
  const read = await createVerifier(options(`${corpus.config.nonce_secret}\n`));
  assert.equal((await read.verify(c.request)).sub, "user-1");
  // Another secret's nonces are refused: the check is made.
  const other = await createVerifier(options(`${corpus.config.nonce_secret}x`));
  assert.equal((await other.verify(c.request).catch((e) => e)).code, "use_dpop_nonce");
});

test("a full replay store refuses the proof (invalid_dpop_proof); a failing one is a 500", async () => {
  const c = boundCase;
  // refuseNoncesBefore 0: a verifier started before the case (the corpus's nonce is older).
  const base = { authServer: AUTH, publicOrigin: corpus.config.public_origins, nonceSecret: corpus.config.nonce_secret, now: () => c.now * 1000, refuseNoncesBefore: 0, fetch: scripted().fetch };
  const full = await createVerifier({ ...base, replayStore: { claim: async () => { throw new ReplayStoreFullError(); } } });
  const e = await full.verify(c.request).catch((x) => x);
  assert.equal(e.code, "invalid_dpop_proof");
  assert.equal(e.description, "the DPoP replay cache is full; retry later");
  const error = console.error;
  console.error = () => {};
  try {
    const broken = await createVerifier({ ...base, replayStore: { claim: async () => { throw new Error("database down"); } } });
    const e2 = await broken.verify(c.request).catch((x) => x);
    assert.deepEqual([e2.status, e2.code, e2.description], [500, "server_error", "internal error"]);
  } finally {
    console.error = error;
  }
});

test("no redirect is followed for the metadata, the keys or the feed: the keys come from the URL checked, the service token goes nowhere else", async () => {
  const { createServer } = await import("node:http");
  const listen = (handler) =>
    new Promise((resolve) => {
      const server = createServer(handler);
      server.listen(0, "127.0.0.1", () => resolve({ server, url: `http://127.0.0.1:${server.address().port}` }));
    });
  // Elsewhere: what a redirect points at, serving the keys and a feed; it must hear nothing.
  const heard = [];
  const elsewhere = await listen((req, res) => {
    heard.push([req.url, req.headers.authorization]);
    if (req.url === "/jwks") return void res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(corpus.config.jwks));
    res.writeHead(200, { "content-type": "text/event-stream" }).write(`event: ready\nid: 1\ndata: {"cursor":1}\n\n`);
  });
  let redirectMetadata = true;
  let redirectKeys = true;
  let feedAsked = 0;
  const auth = await listen((req, res) => {
    const to = (path) => void res.writeHead(302, { location: `${elsewhere.url}${path}` }).end();
    if (req.url === "/.well-known/oauth-authorization-server" && redirectMetadata) return to(req.url);
    if (req.url === "/.well-known/oauth-authorization-server")
      return void res
        .writeHead(200, { "content-type": "application/json" })
        .end(JSON.stringify({ issuer: "tokenwarden", jwks_uri: `${auth.url}/jwks`, tokenwarden_revocations_endpoint: `${auth.url}/feed` }));
    if (req.url === "/jwks") {
      if (redirectKeys) return to("/jwks");
      return void res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(corpus.config.jwks));
    }
    feedAsked++;
    to("/feed");
  });
  const warn = console.warn;
  const warned = [];
  console.warn = (m) => warned.push(m);
  try {
    const options = { authServer: auth.url, allowBearer: true, revocationToken: SVC_TOKEN, now: () => bearerCase.now * 1000 };
    // The metadata redirected, then the keys: refused, each.
    await assert.rejects(createVerifier(options), /302/);
    assert.deepEqual(heard, [], "the metadata's redirect was followed");
    redirectMetadata = false;
    await assert.rejects(createVerifier(options), /302/);
    // The keys served in place; the feed still redirects: never followed, the view stale. Its
    // second ask (a reconnection) shows the first was over.
    redirectKeys = false;
    const v = await createVerifier(options);
    await until("the feed asked again", () => feedAsked >= 2);
    assert.equal(await outcome(v.verify(bearerCase.request)), "503 temporarily_unavailable");
    v.close();
    assert.deepEqual(heard, [], "a redirect was followed");
    assert.ok(warned.some((m) => /302/.test(m)), warned.join("\n"));
  } finally {
    console.warn = warn;
    auth.server.closeAllConnections();
    elsewhere.server.closeAllConnections();
    auth.server.close();
    elsewhere.server.close();
  }
});

test("metadata naming a feed on another origin gets no service token (a hostile or misconfigured discovery document)", async () => {
  const sent = [];
  const fetch = async (url, init = {}) => {
    sent.push([url, init.headers?.authorization]);
    if (url === `${AUTH}/.well-known/oauth-authorization-server`)
      return Response.json({ issuer: "tokenwarden", jwks_uri: `${AUTH}/jwks`, tokenwarden_revocations_endpoint: "https://collector.example/feed" });
    return Response.json(corpus.config.jwks);
  };
  await assert.rejects(createVerifier({ authServer: AUTH, revocationToken: "svc-token-0123456789abcdefghijklmnop", fetch }), /not on the auth server's origin/);
  assert.ok(sent.every(([, auth]) => auth === undefined), "the token was sent nowhere");
});

test("keys past their age are fetched again beside the requests: a JWKS answering slowly holds none of them", async () => {
  const s = scripted();
  let clock = bearerCase.now * 1000;
  const v = await createVerifier({ authServer: AUTH, allowBearer: true, revocationToken: null, now: () => clock, fetch: s.fetch });
  try {
    assert.equal(await outcome(v.verify(bearerCase.request)), 200);
    const fetched = s.jwksFetches;
    // A minute later (the keys' age is a minute at most), the JWKS hangs.
    let release;
    s.jwksGate = new Promise((r) => (release = r));
    clock += 61_000;
    const answered = await Promise.race([
      outcome(v.verify(bearerCase.request)),
      sleep(2_000).then(() => "held by the JWKS fetch"),
    ]);
    assert.equal(answered, 200, "answered with the keys held");
    assert.equal(s.jwksFetches, fetched + 1, "and fetched again beside it");
    release();
    s.jwksGate = null;
  } finally {
    v.close();
  }
});

/** A key of the auth server's that a verifier has not seen (an emergency rotation) under
 * `kid`: its JWKS (the corpus's keys and it) and the Bearer case's request with its token signed
 * by it. */
function newKey(kid) {
  const { publicKey, privateKey } = generateKeyPairSync("ed25519");
  const x = publicKey.export({ format: "jwk" }).x;
  const jwks = { keys: [...corpus.config.jwks.keys, { kty: "OKP", crv: "Ed25519", alg: "EdDSA", use: "sig", kid, x }] };
  const payload = bearerCase.request.headers.authorization.split(" ")[1].split(".")[1];
  const header = Buffer.from(JSON.stringify({ alg: "EdDSA", typ: "at+jwt", kid })).toString("base64url");
  const signature = sign(null, Buffer.from(`${header}.${payload}`), privateKey).toString("base64url");
  const request = { ...bearerCase.request, headers: { ...bearerCase.request.headers, authorization: `Bearer ${header}.${payload}.${signature}` } };
  return { jwks, request };
}

test("a token under a kid the keys lack waits for the fetch beside the requests already under way, and passes", async () => {
  const s = scripted();
  let clock = bearerCase.now * 1000;
  const v = await createVerifier({ authServer: AUTH, allowBearer: true, revocationToken: null, now: () => clock, fetch: s.fetch });
  try {
    assert.equal(await outcome(v.verify(bearerCase.request)), 200);
    // A key of the auth server's that the verifier has not seen, and a token under it.
    const { jwks, request: renewed } = newKey("k-new");
    s.jwks = jwks;
    // The keys' age passes; the fetch that begins beside the next request is held.
    let release;
    s.jwksGate = new Promise((r) => (release = r));
    clock += 61_000;
    assert.equal(await outcome(v.verify(bearerCase.request)), 200);
    const waiting = outcome(v.verify(renewed));
    await sleep(50);
    release();
    s.jwksGate = null;
    assert.equal(await waiting, 200, "the new kid's token waited for the fetch under way");
  } finally {
    v.close();
  }
});

test("a revocation is in force through its until second, as in the crate (until >= now less the leeway)", async () => {
  const s = scripted();
  const v = await createVerifier({ authServer: AUTH, allowBearer: true, revocationToken: null, now: () => bearerCase.now * 1000, fetch: s.fetch });
  try {
    // The default leeway is 5 s: at until + 5 it is still in force, at until + 6 no longer.
    v.revocations.add("session", "session-1", bearerCase.now - 5);
    assert.equal(await outcome(v.verify(bearerCase.request)), "401 invalid_token (the token has been revoked)");
    const w = await createVerifier({ authServer: AUTH, allowBearer: true, revocationToken: null, now: () => bearerCase.now * 1000, fetch: s.fetch });
    try {
      w.revocations.add("session", "session-1", bearerCase.now - 6);
      assert.equal(await outcome(w.verify(bearerCase.request)), 200);
    } finally {
      w.close();
    }
  } finally {
    v.close();
  }
  // refuseNoncesBefore in seconds, or microseconds, is a mistake said at once.
  for (const refuseNoncesBefore of [Math.floor(Date.now() / 1000), Date.now() * 1000, Date.now() + 3_600_000])
    await assert.rejects(createVerifier({ authServer: AUTH, refuseNoncesBefore, revocationToken: null, fetch: s.fetch }), /refuseNoncesBefore must be 0 or a time in milliseconds/);
  // A time long past means what 0 means: taken.
  (await createVerifier({ authServer: AUTH, refuseNoncesBefore: Date.now() - 3 * 365 * 86_400_000, revocationToken: null, fetch: s.fetch })).close();
});

test("requests for a new kid that waited on a fetch over 10 s long all take the next fetch's keys", async () => {
  const s = scripted();
  let clock = bearerCase.now * 1000;
  const v = await createVerifier({ authServer: AUTH, allowBearer: true, revocationToken: null, now: () => clock, fetch: s.fetch });
  try {
    const { jwks, request: renewed } = newKey("k-late");
    // The keys' age passes; the fetch that begins beside a request is held, and answers with
    // the old keys 11 s later (by the verifier's clock).
    let release;
    s.jwksGate = new Promise((r) => (release = r));
    clock += 61_000;
    assert.equal(await outcome(v.verify(bearerCase.request)), 200);
    const waiting = [outcome(v.verify(renewed)), outcome(v.verify(renewed)), outcome(v.verify(renewed))];
    await sleep(50);
    clock += 11_000;
    // The next fetch (the first waiter's, the held one being old by then) is held too, and
    // brings the new key; the held one answers with the old keys.
    let releaseNext;
    s.jwksGate = new Promise((r) => (releaseNext = r));
    release();
    await sleep(50);
    s.jwks = jwks;
    releaseNext();
    s.jwksGate = null;
    assert.deepEqual(await Promise.all(waiting), [200, 200, 200]);
  } finally {
    v.close();
  }
});
