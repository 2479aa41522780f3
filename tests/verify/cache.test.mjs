// What `verify()` hands the app (`req.auth`, `ctx.state.auth`, `request.auth`) is that request's
// own copy: a handler that changes it (deletes `cnf`, turns `exp` into a Date, adds a role)
// changes nothing the verifier decides the next request with the same token by. Before, the
// token cache handed out its own object: a `delete req.auth.cnf` let the stolen bound token
// through as Bearer, and `req.auth.exp = new Date(...)` kept it valid past its exp.
import assert from "node:assert/strict";
import { test } from "node:test";
import * as mod from "../../pkg/verify.js";
import { corpus, verifierFor } from "./corpus.mjs";

const caseNamed = (name) => corpus.cases.find((c) => c.name === name);
const outcome = (p) => p.then(() => 200, (e) => `${e.status} ${e.code}`);

test("a bound token's claims changed by the app: sent as Bearer, still refused", async () => {
  const bound = caseNamed("valid bound request");
  const asBearer = caseNamed("bound token sent as Bearer when Bearer is allowed");
  const v = await verifierFor(mod, asBearer);
  try {
    const claims = await v.verify(bound.request);
    assert.equal(typeof claims.cnf?.jkt, "string");
    delete claims.cnf;
    claims.roles.push("admin");
    assert.equal(await outcome(v.verify(asBearer.request)), "401 invalid_token");
  } finally {
    v.close();
  }
});

test("an unbound token's exp changed by the app: refused once it expires; each request its own copy", async () => {
  const c = { ...caseNamed("valid unbound Bearer token when Bearer is allowed") };
  const v = await verifierFor(mod, c);
  try {
    const first = await v.verify(c.request);
    first.exp = new Date(8.64e15);
    first.roles.push("admin");
    const second = await v.verify(c.request);
    assert.notEqual(second, first);
    assert.deepEqual(second.roles, ["user"]);
    assert.equal(typeof second.exp, "number");
    // Past its exp (and the leeway): expired, whatever the first request's handler wrote.
    c.now = second.exp + 60;
    assert.equal(await outcome(v.verify(c.request)), "401 invalid_token");
  } finally {
    v.close();
  }
});

test("a request without its method or its url is the caller's mistake: a TypeError, never taken for GET or /", async () => {
  const c = caseNamed("valid bound request");
  const v = await verifierFor(mod, c);
  try {
    const { method, ...rest } = c.request;
    assert.equal(method, "GET");
    await assert.rejects(v.verify(rest), TypeError);
    // A proof made for `/` passed on a request whose url was left out (read as `/`).
    const { url, ...noUrl } = c.request;
    await assert.rejects(v.verify(noUrl), /url is required/);
    await assert.rejects(v.verify({ ...c.request, url: "" }), /url is required/);
    assert.equal(await outcome(v.verify(c.request)), 200, "with both, as before");
  } finally {
    v.close();
  }
});
