// Verifications per second on one core (Node is single-threaded here: crypto.verify runs on the
// main thread) of a DPoP-bound request to a resource:
//   - tokenwarden/verify (pkg/verify.js): token + proof + nonce + replay store, warm JWKS; with
//     the token's signature remembered (a session re-presenting its token, the usual case) and
//     with a new token every time;
//   - jose's jwtVerify alone: the token only (EdDSA, iss, aud, typ), no proof;
//   - express-oauth2-jwt-bearer (Auth0) with our JWKS, Bearer and with its DPoP support (proof
//     checked; no nonce and no replay cache: it checks less);
//   - the primitives: ES256 and Ed25519 verify in node:crypto.
// Proofs and tokens are made before each timed loop. `node bench/verify.mjs [count]`.
import { createHash, createPublicKey, generateKeyPairSync, randomUUID, sign, verify } from "node:crypto";
import { jwtVerify, importJWK } from "jose";
import { auth } from "express-oauth2-jwt-bearer";
import { createVerifier } from "../pkg/verify.js";

const N = Number(process.argv[2] ?? 20_000);
const b64 = (x) => Buffer.from(x).toString("base64url");
const AUTH = "https://auth.example";
const ORIGIN = "https://api.example.com";
const HTU = `${ORIGIN}/api/me`;
const SECRET = "bench-nonce-secret-0123456789abcdefghijkl";

// The auth server's key and JWKS; a client's P-256 key.
const ed = generateKeyPairSync("ed25519");
const edJwk = ed.publicKey.export({ format: "jwk" });
const kid = "bench-key";
const jwks = { keys: [{ ...edJwk, kid, alg: "EdDSA", use: "sig" }] };
const ec = generateKeyPairSync("ec", { namedCurve: "P-256" });
const { x, y } = ec.publicKey.export({ format: "jwk" });
const jwk = { kty: "EC", crv: "P-256", x, y };
const jkt = b64(createHash("sha256").update(`{"crv":"P-256","kty":"EC","x":"${x}","y":"${y}"}`).digest());
const header64 = b64(JSON.stringify({ typ: "dpop+jwt", alg: "ES256", jwk }));

function token(i = 0) {
  const now = Math.floor(Date.now() / 1000);
  const claims = {
    iss: "tokenwarden", aud: "tokenwarden-api", sub: `user-${i}`, sid: `s-${i}`, jti: randomUUID(),
    iat: now, nbf: now, exp: now + 600, email: "u@example.com", name: "U", roles: ["user"],
    email_verified: true, cnf: { jkt },
  };
  const input = `${b64(JSON.stringify({ alg: "EdDSA", typ: "at+jwt", kid }))}.${b64(JSON.stringify(claims))}`;
  return `${input}.${b64(sign(null, Buffer.from(input), ed.privateKey))}`;
}

function proof(tok, nonce) {
  const claims = { jti: randomUUID(), htm: "GET", htu: HTU, iat: Math.floor(Date.now() / 1000), ath: b64(createHash("sha256").update(tok).digest()) };
  if (nonce) claims.nonce = nonce;
  const input = `${header64}.${b64(JSON.stringify(claims))}`;
  return `${input}.${b64(sign("sha256", Buffer.from(input), { key: ec.privateKey, dsaEncoding: "ieee-p1363" }))}`;
}

const fetchStub = async (url) =>
  url.endsWith("oauth-authorization-server")
    ? Response.json({ issuer: "tokenwarden", jwks_uri: `${AUTH}/jwks`, dpop_signing_alg_values_supported: ["ES256"] })
    : Response.json(jwks, { headers: { "cache-control": "max-age=3600" } });

const results = [];
async function measure(name, count, setup, run) {
  const inputs = await setup(count);
  for (let i = 0; i < Math.min(200, count); i++) await run(inputs, i); // warm-up (these inputs are used up)
  const start = process.hrtime.bigint();
  for (let i = 200; i < count; i++) await run(inputs, i);
  const secs = Number(process.hrtime.bigint() - start) / 1e9;
  const perSec = (count - 200) / secs;
  results.push({ name, perSec, us: 1e6 / perSec });
  console.log(`${name.padEnd(78)} ${Math.round(perSec).toString().padStart(7)} /s  ${(1e6 / perSec).toFixed(1).padStart(6)} µs`);
}

const must = (ok, what) => {
  if (!ok) throw new Error(`bench: ${what} refused a valid request`);
};

console.log(`node ${process.version}, ${N} requests per line, one core\n`);

// tokenwarden/verify
for (const [label, fresh] of [["same token, its signature remembered", false], ["a new token every time", true]]) {
  const v = await createVerifier({ authServer: AUTH, publicOrigin: ORIGIN, nonceSecret: SECRET, fetch: fetchStub });
  await measure(`tokenwarden/verify: DPoP-bound request (${label})`, N, (n) => {
    const t0 = token();
    return Array.from({ length: n }, (_, i) => {
      const t = fresh ? token(i) : t0;
      return { method: "GET", url: "/api/me", headers: { host: "api.example.com", authorization: `DPoP ${t}`, dpop: proof(t, v.nonce()) } };
    });
  }, async (reqs, i) => must((await v.verify(reqs[i])).cnf.jkt === jkt, "tokenwarden/verify"));
  v.close();
}

// jose: the token only
{
  const key = await importJWK({ ...edJwk, alg: "EdDSA" }, "EdDSA");
  const t = token();
  await measure("jose jwtVerify: the token only (EdDSA, iss, aud, typ; no proof)", N, () => null, async () =>
    must((await jwtVerify(t, key, { issuer: "tokenwarden", audience: "tokenwarden-api", algorithms: ["EdDSA"], typ: "at+jwt" })).payload.sub, "jose"));
}

// express-oauth2-jwt-bearer, as Express would call it
const fakeReq = (headers) => ({ headers, method: "GET", protocol: "https", originalUrl: "/api/me", url: "/api/me", query: {}, body: undefined, get: (n) => headers[n.toLowerCase()], is: () => false });
async function viaMiddleware(mw, headers) {
  const req = fakeReq(headers);
  await new Promise((resolve, reject) => mw(req, {}, (e) => (e ? reject(e) : resolve())));
  return req.auth;
}
{
  const common = { issuer: "tokenwarden", audience: "tokenwarden-api", publicKey: jwks, tokenSigningAlg: "EdDSA" };
  const bearer = auth({ ...common, dpop: { enabled: false } });
  const t = token();
  // Its Bearer mode refuses a token with cnf.jkt? Then an unbound one.
  let bt = t;
  try {
    await viaMiddleware(bearer, { host: "api.example.com", authorization: `Bearer ${t}` });
  } catch {
    bt = null;
  }
  if (bt)
    await measure("express-oauth2-jwt-bearer: Bearer token (no proof)", N, () => null, async () =>
      must(await viaMiddleware(bearer, { host: "api.example.com", authorization: `Bearer ${bt}` }), "express-oauth2-jwt-bearer"));
  const dpop = auth({ ...common, dpop: { enabled: true, required: true } });
  await measure("express-oauth2-jwt-bearer: DPoP-bound request (no nonce, no replay cache)", N, (n) =>
    Array.from({ length: n }, () => ({ host: "api.example.com", authorization: `DPoP ${t}`, dpop: proof(t) })),
    async (hs, i) => must(await viaMiddleware(dpop, hs[i]), "express-oauth2-jwt-bearer (DPoP)"));
}

// The primitives.
{
  const msg = Buffer.from(`${header64}.payload`);
  const sig = sign("sha256", msg, { key: ec.privateKey, dsaEncoding: "ieee-p1363" });
  const keyObj = createPublicKey({ key: jwk, format: "jwk" });
  await measure("node:crypto ES256 verify, key parsed from the JWK each time", N, () => null, () =>
    must(verify("sha256", msg, { key: createPublicKey({ key: jwk, format: "jwk" }), dsaEncoding: "ieee-p1363" }, sig), "ES256"));
  await measure("node:crypto ES256 verify, a parsed key", N, () => null, () =>
    must(verify("sha256", msg, { key: keyObj, dsaEncoding: "ieee-p1363" }, sig), "ES256"));
  const edSig = sign(null, msg, ed.privateKey);
  await measure("node:crypto Ed25519 verify", N, () => null, () => must(verify(null, msg, ed.publicKey, edSig), "Ed25519"));
}
