// `claims()`: the driver decodes the held token's payload (src/web/tokenwarden.js, payloadOf),
// strictly. Run in Node against the built package (pkg/): a TokenManager is handed each token by
// another "tab" over BroadcastChannel, as a token from a peer is adopted, then reads its claims.
//   node --test tests/driver/
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { initSync, TokenManager } from "../../pkg/tokenwarden.js";

const pkg = (f) => fileURLToPath(new URL(`../../pkg/${f}`, import.meta.url));
initSync(readFileSync(pkg("tokenwarden_bg.wasm")));

const BASE = "https://auth.example";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The claims a TokenManager reads from `token`, handed over by another tab; `undefined` if it
 * was not adopted (not shaped like a token). */
async function claimsOf(token) {
  const auth = new TokenManager({ baseUrl: BASE, dpop: false, sessionHintCookie: null });
  const peer = new BroadcastChannel("tokenwarden " + BASE + "/auth/refresh");
  try {
    peer.postMessage({ t: "token", kind: "refresh", token, lifetime: 600, at: Date.now() });
    for (let i = 0; i < 100 && !auth.isAuthenticated; i++) await sleep(5);
    return auth.isAuthenticated ? auth.claims() : undefined;
  } finally {
    peer.close();
    auth.free();
  }
}

// {"sub":"u1","exp":1700000600,"iat":1700000000,"name":"Zoë"}
const PAYLOAD = "eyJzdWIiOiJ1MSIsImV4cCI6MTcwMDAwMDYwMCwiaWF0IjoxNzAwMDAwMDAwLCJuYW1lIjoiWm_DqyJ9";
const HEADER = "eyJhbGciOiJFZERTQSIsInR5cCI6ImF0K2p3dCJ9";

test("the payload of a compact JWT is decoded, as UTF-8", async () => {
  assert.deepEqual(await claimsOf(`${HEADER}.${PAYLOAD}.c2ln`), {
    sub: "u1", exp: 1700000600, iat: 1700000000, name: "Zoë",
  });
});

test("padding on the payload is tolerated", async () => {
  assert.deepEqual(await claimsOf("a.e30=.c"), {});
  assert.deepEqual(await claimsOf("a.eyJhIjoxfQ==.c"), { a: 1 });
});

test("tokens of the wrong shape have no claims", async () => {
  for (const bad of ["abc", "a.b", "a.e30.c.d", ".e30.c", "a..c", "a.e30"]) {
    assert.equal(await claimsOf(bad), null, bad);
  }
});

test("a payload outside unpadded base64url, with stray bits or of an impossible length is refused", async () => {
  // e30 is {}: one more bit set in its last character, or another alphabet, and it is not.
  for (const bad of ["a.e31.c", "a.e3+.c", "a.e3/.c", "a.e30AA.c", "a.e30A.c", "a.!!!.c"]) {
    assert.equal(await claimsOf(bad), null, bad);
  }
});

test("a payload that is not a JSON object, or not UTF-8, has no claims", async () => {
  // [1], "x", and the bytes 0xff 0xfe.
  for (const bad of ["a.WzFd.c", "a.Ingi.c", "a.__4.c"]) {
    assert.equal(await claimsOf(bad), null, bad);
  }
});

test("a token over 16 KiB is never decoded", async () => {
  const huge = `a.e30${"A".repeat(16384)}.c`;
  assert.equal(await claimsOf(huge), undefined, "not even adopted (not shaped like a token)");
  const edge = `a.e30.${"A".repeat(16384 - 7)}`;
  assert.deepEqual(await claimsOf(edge), {}, "16 KiB exactly is");
});
