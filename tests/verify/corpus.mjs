// Runs the conformance corpus (tests/conformance/corpus.json) through a `tokenwarden/verify`
// module: shared by conformance.test.mjs (the real one) and mutations.test.mjs (mutants).
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

export const ME = "node-verify";
export const corpusPath = fileURLToPath(new URL("../conformance/corpus.json", import.meta.url));
export const corpus = JSON.parse(readFileSync(corpusPath, "utf8"));

const AUTH = "https://auth.example";

/** A fetch that serves the corpus's metadata and JWKS. */
export function stubFetch(config) {
  return async (url) => {
    if (url === `${AUTH}/.well-known/oauth-authorization-server`)
      return Response.json({ issuer: config.issuer, jwks_uri: `${AUTH}/jwks`, dpop_signing_alg_values_supported: ["ES256"] });
    if (url === `${AUTH}/jwks`) return Response.json(config.jwks, { headers: { "cache-control": "public, max-age=60" } });
    return new Response("not found", { status: 404 });
  };
}

export function configOf(c) {
  return { ...corpus.config, ...(c.config ?? {}) };
}

/** createVerifier's options for case `c`: the verifier the case says, at the case's clock. */
export function optionsFor(c) {
  const config = configOf(c);
  return {
    authServer: AUTH,
    publicOrigin: config.public_origins,
    audience: config.audience,
    issuer: config.issuer,
    leewaySecs: config.leeway_secs,
    nonceSecret: config.nonce_secret,
    allowBearer: config.allow_bearer,
    now: () => c.now * 1000,
    // A verifier started before the case (as the server runner's): the corpus's nonces are
    // issued at the case's window start.
    refuseNoncesBefore: 0,
    fetch: stubFetch(config),
  };
}

/** A verifier of `mod` (the module's exports) set up as the case says, at the case's clock. */
export async function verifierFor(mod, c) {
  const v = await mod.createVerifier(optionsFor(c));
  for (const r of c.revoked ?? []) v.revocations.add(r.kind, r.id, r.until);
  return v;
}

async function answer(v, request) {
  try {
    await v.verify(request);
    return { status: 200, headers: {} };
  } catch (e) {
    if (typeof e?.status !== "number") return { status: 0, error: String(e), headers: {} };
    return { status: e.status, error: e.code, headers: e.headers ?? {} };
  }
}

/** Every case's failures (an empty list when `mod` answers as the corpus expects). */
export async function runCorpus(mod, { only } = {}) {
  const failures = [];
  let ran = 0;
  let skipped = 0;
  for (const c of corpus.cases) {
    if (only && !only(c)) continue;
    if (c.skip?.[ME]) {
      skipped++;
      continue;
    }
    ran++;
    const v = await verifierFor(mod, c);
    try {
      for (const [i, earlier] of (c.replay_before ?? []).entries()) {
        const a = await answer(v, earlier);
        if (a.status !== 200) failures.push(`${c.name}: earlier request ${i} got ${a.status} ${a.error}`);
      }
      const a = await answer(v, c.request);
      const e = c.expect;
      if (a.status !== e.status || (a.error ?? undefined) !== e.error) {
        failures.push(`${c.name}: got ${a.status} ${a.error}, expected ${e.status} ${e.error}`);
        continue;
      }
      const challenges = [a.headers["WWW-Authenticate"] ?? []].flat().join("\n");
      for (const want of e.challenge_contains ?? [])
        if (!challenges.includes(want)) failures.push(`${c.name}: challenge ${JSON.stringify(challenges)} lacks ${want}`);
      if (e.dpop_nonce && !/^[A-Za-z0-9_-]{43}$/.test(a.headers["DPoP-Nonce"] ?? ""))
        failures.push(`${c.name}: no DPoP-Nonce in the answer`);
    } finally {
      v.close();
    }
  }
  return { failures, ran, skipped };
}
