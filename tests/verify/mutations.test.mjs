// Each check counts: remove one check of pkg/verify.js at a time, import the mutant (a data:
// URL), run the conformance corpus through it, and some case must now fail. A check whose
// removal no case notices is a check the corpus does not test.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { runCorpus } from "./corpus.mjs";

const source = readFileSync(new URL("../../pkg/verify.js", import.meta.url), "utf8");

/** [name, [[snippet, replacement], ...]]: each snippet must occur exactly once. */
const mutations = [
  ["ath", [['if (athClaim !== ath(expected.token)) throw new ProofRefusal("ath");', ""]]],
  ["htm", [['if (htm !== expected.method) throw new ProofRefusal("method");', ""]]],
  ["htu origin", [['if (!originOk) throw new ProofRefusal("url");', ""]]],
  ["htu path", [['if (url.path !== expected.path && normalizePath(expected.path) !== url.path) throw new ProofRefusal("url");', ""]]],
  [
    "iat window",
    [
      ['if (iat < expected.now - PROOF_MAX_AGE) throw new ProofRefusal("stale");', ""],
      ['if (iat > expected.now + PROOF_MAX_FUTURE) throw new ProofRefusal("future");', ""],
    ],
  ],
  ["nonce", [['if (nonce === undefined || !nonceAccepted(nonce)) throw new ProofRefusal("nonce");', ""]]],
  ["jkt binding", [['if (jkt !== expected.jkt) throw new ProofRefusal("keyMismatch");', ""]]],
  ["replay", [['if (fresh !== true) throw new ProofRefusal("replayed");', ""]]],
  [
    // The pin's point: without it a verifier trusts the header's alg (none, HS256 with the
    // public key as the secret): the classic algorithm-confusion bug.
    "token alg pin",
    [
      ['if (alg !== "EdDSA") throw new TokenRefusal("algorithm");', ""],
      [
        'if (sig.length !== 64 || !strongPoint(sig.subarray(0, 32)) || !cryptoVerify(null, Buffer.from(`${h64}.${p64}`), key, sig))',
        'if (alg === "none" ? false : alg === "HS256" ? !createHmac("sha256", Buffer.from(key.export({ format: "jwk" }).x, "base64url")).update(`${h64}.${p64}`).digest().equals(sig) : (sig.length !== 64 || !strongPoint(sig.subarray(0, 32)) || !cryptoVerify(null, Buffer.from(`${h64}.${p64}`), key, sig)))',
      ],
    ],
  ],
  ["token exp", [['if (claims.exp + leewaySecs <= nowSecs) throw new TokenRefusal("expired");\n    if (isInt(claims.nbf)', "if (isInt(claims.nbf)"]]],
  ["token iss/aud", [['if (claims.iss !== issuer || claims.aud !== audience) throw new TokenRefusal("claims");', ""]]],
  ["bound token as Bearer", [['if (!dpopScheme && bound) throw invalidToken("bound", true);', ""]]],
  ["revocation", [['if (revocations.isRevoked(claims.jti, claims.sid, nowSecs)) throw invalidToken("revoked", dpopScheme);', ""]]],
  ["proof typ", [['if (typ !== "dpop+jwt") throw new ProofRefusal("type");', ""]]],
  // A key of small order verifies a forged signature in node:crypto (OpenSSL, cofactorless).
  ["Ed25519 small-order key", [["(ed && !strongPoint(bytes))", "false"]]],
  // Without it, the alg names one kind of key and the jwk is another.
  ["Ed25519 R of small order", [["(!ed || strongPoint(signature.subarray(0, 32)))", "true"]]],
  // A JWKS key of small order: anyone signs any token under its kid.
  ["JWKS key of small order", [["|| !strongPoint(x)) continue;", ") continue;"]]],
  ["token R of small order", [["|| !strongPoint(sig.subarray(0, 32)) ||", "||"]]],
  ["proof alg bound to its key kind", [['ed ? jwk.kty !== "OKP" || jwk.crv !== "Ed25519" : jwk.kty !== "EC" || jwk.crv !== "P-256"', "false"]]],
];

for (const [name, edits] of mutations) {
  test(`removing the ${name} check fails some case of the corpus`, async () => {
    let mutant = source;
    for (const [snippet, replacement] of edits) {
      assert.equal(mutant.split(snippet).length, 2, `the snippet of ${name} occurs exactly once in pkg/verify.js`);
      mutant = mutant.replace(snippet, () => replacement);
    }
    const mod = await import(`data:text/javascript;base64,${Buffer.from(mutant).toString("base64")}`);
    const { failures } = await runCorpus(mod);
    assert.ok(failures.length > 0, `no case notices that the ${name} check is gone`);
    console.log(`${name}: ${failures.length} cases fail, e.g. ${failures[0]}`);
  });
}
