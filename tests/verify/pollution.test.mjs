// A polluted Object.prototype (a dependency of the API, a config merge that let `__proto__`
// through) changes no decision of the verifier: the options it reads are the caller's own, and
// a token's `cnf` is the token's own. Before, an option left out was looked up on the prototype
// (`allowBearer: true`, a `replayStore` that claims nothing, a `fetch` of the attacker's), and a
// planted `cnf` made every unbound token look bound to the attacker's key: a stolen token then
// passed as DPoP with the attacker's proof. A review found both.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";
import * as mod from "../../pkg/verify.js";
import { corpus, optionsFor, stubFetch } from "./corpus.mjs";

const caseNamed = (name) => corpus.cases.find((c) => c.name === name);
const outcome = (p) => p.then(() => 200, (e) => `${e.status} ${e.code}`);

/** Runs `f` with `props` set on Object.prototype, removed after. */
async function polluted(props, f) {
  for (const [k, v] of Object.entries(props))
    Object.defineProperty(Object.prototype, k, { value: v, configurable: true, writable: true });
  try {
    return await f();
  } finally {
    for (const k of Object.keys(props)) delete Object.prototype[k];
  }
}

/** createVerifier as the corpus sets it up for `c`, but for `allowBearer`, left out. */
function verifierLeavingOut(c) {
  const { allowBearer: _, ...options } = optionsFor(c);
  return mod.createVerifier({ ...options, revocationToken: null });
}

test("an option left out is its default, whatever Object.prototype holds", async () => {
  const c = caseNamed("unbound Bearer token when Bearer is not allowed");
  assert.equal(c.expect.status, 401);
  const control = await verifierLeavingOut(c);
  assert.equal(await outcome(control.verify(c.request)), "401 invalid_token");
  control.close();
  const refused = await polluted({ allowBearer: true, onStale: "accept" }, async () => {
    const v = await verifierLeavingOut(c);
    try {
      return await outcome(v.verify(c.request));
    } finally {
      v.close();
    }
  });
  assert.equal(refused, "401 invalid_token", "allowBearer from the prototype");
});

test("a cnf planted on Object.prototype binds no unbound token to the planter's key", async () => {
  const c = caseNamed("unbound token sent as DPoP with a valid proof");
  assert.equal(c.expect.status, 401);
  // The proof's key's thumbprint (RFC 7638), as the planter would name it.
  const proof = c.request.headers.dpop;
  const jwk = JSON.parse(Buffer.from(proof.split(".")[0], "base64url").toString()).jwk;
  const canonical = jwk.kty === "EC"
    ? { crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y }
    : { crv: jwk.crv, kty: jwk.kty, x: jwk.x };
  const jkt = createHash("sha256").update(JSON.stringify(canonical)).digest("base64url");
  const answer = await polluted({ cnf: { jkt } }, async () => {
    const v = await mod.createVerifier({ ...optionsFor(c), revocationToken: null });
    try {
      return await outcome(v.verify(c.request));
    } finally {
      v.close();
    }
  });
  assert.equal(answer, "401 invalid_token");
});

test("a revocation token that cannot be the auth server's is refused at creation, not 503s later", async () => {
  const config = corpus.config;
  for (const revocationToken of ["", "   ", "short-token", 42]) {
    await assert.rejects(
      mod.createVerifier({ authServer: "https://auth.example", revocationToken, fetch: stubFetch(config) }),
      { name: "TypeError", message: /revocationToken must be the auth server's revocation feed token/ },
      JSON.stringify(revocationToken),
    );
  }
});

test("the replay stores' options and the JWKS's keys are their own too", async () => {
  await polluted({ max: -1, table: "users" }, async () => {
    const store = mod.memoryReplayStore();
    assert.equal(await store.claim("k|j", Math.floor(Date.now() / 1000) + 60), true, "max from the prototype");
    const sent = [];
    const pool = { query: async (text) => (sent.push(text), { rows: [{ proof: "x" }], rowCount: 1 }) };
    await mod.postgresReplayStore(pool).claim("k|j", Math.floor(Date.now() / 1000) + 60);
    assert.ok(sent.length > 0 && sent.every((q) => !/\busers\b/.test(q)), sent.join("\n"));
  });
  // Options of a class of their own: refused, not their inherited members dropped.
  class Options { get authServer() { return "https://auth.example"; } }
  await assert.rejects(mod.createVerifier(new Options()), { name: "TypeError", message: /plain object/ });
  // A JWKS without its own `keys`: keys planted on the prototype are not taken.
  const config = corpus.config;
  const fetch = async (url) => url.endsWith("/jwks") ? Response.json({}) : stubFetch(config)(url);
  await polluted({ keys: config.jwks.keys }, async () => {
    await assert.rejects(mod.createVerifier({ authServer: "https://auth.example", revocationToken: null, fetch }), /keys array/);
  });
});
