// tokenwarden/verify: verifies tokenwarden access tokens and their DPoP proofs in Node (20+),
// exactly as the reference server checks a protected resource (docs/PROTOCOL.md, "Access
// tokens" and "DPoP: sender-constrained sessions"): the same checks, in the same order, with
// the same answers (status, error code, description, WWW-Authenticate challenges, DPoP-Nonce).
// The Rust twin is the crate tokenwarden-dpop; tests/conformance/corpus.json is run through
// both (and through the server).
//
// Node-only (node:crypto), no dependency, no I/O at import: the network is used only by
// createVerifier (the auth server's metadata and JWKS) and the revocation feed it starts.

import { createHash, createHmac, createPublicKey, randomBytes, timingSafeEqual, verify as cryptoVerify } from "node:crypto";
import { isIP } from "node:net";

const REALM = "tokenwarden";
/** The proof algorithms accepted (tokenwarden_dpop::ALGORITHMS), each with its one key type:
 * ES256 a P-256 key; EdDSA, or Ed25519 (RFC 9864's name for it), an Ed25519 key. */
const PROOF_ALGS = ["ES256", "EdDSA", "Ed25519"];
const MAX_PROOF_LEN = 4096;
const MAX_TOKEN_LEN = 8192;
const PROOF_MAX_AGE = 60;
const PROOF_MAX_FUTURE = 10;
const NONCE_WINDOW = 30;
const NONCE_LIFETIME_MS = 60_000;
const NONCE_MAX_FUTURE_MS = 10_000;
const NONCE_LABEL = Buffer.from("tokenwarden-dpop-nonce:");
const NONCE_MAC_LEN = 24;
const TOKEN_CACHE_CAPACITY = 10_000;
const JWKS_MIN_REFETCH_MS = 10_000;
const JWKS_DEFAULT_MAX_AGE_MS = 60_000;
/** After a feed's `keys` event (and a connection's `ready`) the JWKS is fetched at once and
 * again this much later, past the 5 s within which an instance that serves the JWKS has read
 * and applied the events (else it answers 503): dpop/src/feed.rs KEYS_AGAIN. */
const KEYS_AGAIN_MS = 6_000;
/** A lag (s) past which the feed says once per connection that its news arrive late. */
const LATE_WARNING_SECS = 5;
/** The longest metadata document or JWKS read (dpop/src/feed.rs MAX_DOCUMENT_BYTES): the
 * auth server's are a few KiB; a longer answer is refused before it fills memory. */
const MAX_DOCUMENT_BYTES = 1 << 20;
/** The longest revocation-feed event or line read (dpop/src/feed.rs MAX_EVENT_BYTES). */
const MAX_EVENT_CHARS = 64 * 1024;
const PRIVATE_MEMBERS = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

// ---------------------------------------------------------------------------------------------
// Errors: the server's answers (server/src/error.rs).

/**
 * The CORS settings a browser on another origin needs (the `cors` and `@fastify/cors`
 * option names; Koa's `@koa/cors`: allowMethods, allowHeaders, exposeHeaders): every method of
 * an API of JSON resources (`@fastify/cors` allows only GET, HEAD and POST by default), the
 * token and its proof in, the next nonce and why a token was refused out. The crate's
 * resource::CORS_ALLOW_METHODS, CORS_ALLOW_HEADERS and CORS_EXPOSE_HEADERS say the same
 * (tests/verify/package.test.mjs).
 */
// The lists are plain arrays, as `cors`'s and `@fastify/cors`'s types take them (`string[]`).
export const CORS = Object.freeze({
  methods: ["GET", "POST", "PUT", "PATCH", "DELETE"],
  allowedHeaders: ["authorization", "dpop", "content-type"],
  exposedHeaders: ["dpop-nonce", "www-authenticate"],
});

/** A refused request: answer it with `status`, `headers` and `{error, error_description}`. */
export class VerifyError extends Error {
  constructor(status, code, description, headers = {}) {
    super(description);
    this.name = "VerifyError";
    this.status = status;
    this.code = code;
    this.description = description;
    this.headers = headers;
  }

  /** The JSON body: `{"error", "error_description"}`. */
  toJSON() {
    return { error: this.code, error_description: this.description };
  }
}

const clean = (s) => String(s).replace(/["\\\r\n]/g, "");

/** `DPoP realm="…", algs="ES256 EdDSA Ed25519"` and, with an error, `error="…", error_description="…"`
 * (tokenwarden_dpop::dpop_challenge). */
function dpopChallenge(code, description) {
  let c = `DPoP realm="${REALM}", algs="${PROOF_ALGS.join(" ")}"`;
  if (code !== undefined) c += `, error="${clean(code)}", error_description="${clean(description)}"`;
  return c;
}

const TOKEN_TEXT = {
  malformed: "the token is malformed",
  algorithm: "the token's algorithm is not accepted",
  type: "the token is not an access token (typ must be at+jwt)",
  unknownKey: "the token's signing key is unknown or revoked",
  signature: "the token's signature is invalid",
  claims: "the token's issuer, audience or claims are invalid",
  expired: "the token has expired",
  notYetValid: "the token is not valid yet",
  revoked: "the token has been revoked",
  bound: "the token is DPoP-bound: send it as Authorization: DPoP with a DPoP proof",
  notBound: "the token is not DPoP-bound: send it as Authorization: Bearer",
  dpopRequired: "a DPoP-bound token is required",
};

const PROOF_TEXT = {
  missing: "a DPoP proof is required",
  multiple: "more than one DPoP header",
  malformed: "the DPoP proof is malformed",
  type: "the DPoP proof's typ must be dpop+jwt",
  algorithm: "the DPoP proof's algorithm is not accepted (ES256, EdDSA or Ed25519)",
  critical: "the DPoP proof's crit header is not supported",
  key: "the DPoP proof's jwk is not a public key of its algorithm (P-256 for ES256, Ed25519 for EdDSA and Ed25519)",
  signature: "the DPoP proof's signature is invalid",
  claims: "the DPoP proof's claims are missing or malformed",
  method: "the DPoP proof's htm does not match the request method",
  url: "the DPoP proof's htu does not match the request URL",
  stale: "the DPoP proof is too old",
  future: "the DPoP proof is issued in the future",
  ath: "the DPoP proof's ath does not match the access token",
  nonce: "a fresh DPoP nonce is required",
  keyMismatch: "the DPoP proof's key is not the key the session is bound to",
  replayed: "the DPoP proof was already used",
  full: "the DPoP replay cache is full; retry later",
};

class TokenRefusal {
  constructor(why) {
    this.why = why;
  }
}
class ProofRefusal {
  constructor(why) {
    this.why = why;
  }
}

const missingToken = () =>
  new VerifyError(401, "missing_token", "an Authorization: DPoP or Bearer token is required", {
    "WWW-Authenticate": [`Bearer realm="${REALM}"`, dpopChallenge()],
  });

/** invalid_token: a Bearer challenge for a token sent as Bearer, a DPoP one otherwise. */
function invalidToken(why, dpopScheme) {
  const text = TOKEN_TEXT[why];
  const challenge = dpopScheme
    ? dpopChallenge("invalid_token", text)
    : `Bearer realm="${REALM}", error="invalid_token", error_description="${text}"`;
  return new VerifyError(401, "invalid_token", text, { "WWW-Authenticate": challenge });
}

function proofError(why, nonce) {
  const text = PROOF_TEXT[why];
  const code = why === "nonce" ? "use_dpop_nonce" : "invalid_dpop_proof";
  return new VerifyError(401, code, text, { "WWW-Authenticate": dpopChallenge(code, text), "DPoP-Nonce": nonce });
}

// ---------------------------------------------------------------------------------------------
// Encodings, strict like the Rust side (base64 URL_SAFE_NO_PAD, serde_json on UTF-8).

const B64URL = /^[A-Za-z0-9_-]*$/;
// A byte order mark is kept, so that JSON.parse refuses it as serde does (TextDecoder would
// drop it).
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Canonical unpadded base64url, else null (padding, other alphabets, stray bits refused). */
function b64decode(s) {
  if (!B64URL.test(s) || s.length % 4 === 1) return null;
  const buf = Buffer.from(s, "base64url");
  return buf.toString("base64url") === s ? buf : null;
}

/** How deep a JWS part's arrays and objects may nest, its own object counted
 * (dpop/src/lib.rs MAX_JSON_DEPTH). */
const MAX_JSON_DEPTH = 32;

/** dpop/src/lib.rs plain_json, the same scan of the text (the UTF-8 is checked by decoding):
 * arrays and objects nested at most MAX_JSON_DEPTH deep, and no `\u` escape of a surrogate
 * outside a pair, in any member, one named twice too (JSON.parse keeps only the last). serde_json
 * and JSON.parse disagree on these; both verifiers refuse them. */
function plainJson(text) {
  const unit = (at) => {
    const hex = text.slice(at, at + 4);
    return /^[0-9a-fA-F]{4}$/.test(hex) ? parseInt(hex, 16) : -1;
  };
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === '"') inString = false;
      else if (c === "\\") {
        if (text[i + 1] !== "u") i++;
        else {
          const u = unit(i + 2);
          if (u >= 0xd800 && u <= 0xdbff) {
            const low = text.startsWith("\\u", i + 6) ? unit(i + 8) : -1;
            if (low < 0xdc00 || low > 0xdfff) return false;
            i += 11;
          } else if (u >= 0xdc00 && u <= 0xdfff) return false;
          else i += 5;
        }
      }
    } else if (c === '"') inString = true;
    else if (c === "{" || c === "[") {
      if (++depth > MAX_JSON_DEPTH) return false;
    } else if (c === "}" || c === "]") depth = Math.max(0, depth - 1);
  }
  return true;
}

/** JSON from bytes (strict UTF-8, plainJson), or undefined. */
function parseJson(bytes) {
  try {
    const text = utf8.decode(bytes);
    return plainJson(text) ? JSON.parse(text) : undefined;
  } catch {
    return undefined;
  }
}

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

/** `o`'s own members only, in an object with no prototype: a member left out is never looked up
 * on a polluted Object.prototype. (An object of a class of its own, or with a prototype of its
 * own, is refused: its inherited members would be dropped without a word.) */
function own(o, what) {
  if (o === undefined || o === null) return { __proto__: null };
  const proto = Object.getPrototypeOf(o);
  if (typeof o !== "object" || (proto !== Object.prototype && proto !== null))
    throw new TypeError(`${what} must be a plain object`);
  return { __proto__: null, ...o };
}

/** Whether every number in `v` is finite: serde_json refuses one past a double's range (`1e400`)
 * where the crate reads a value (a proof's jwk, a token's claims), which JSON.parse makes
 * Infinity. (Depth is bounded by plainJson.) */
function allFinite(v) {
  if (typeof v === "number") return Number.isFinite(v);
  if (v !== null && typeof v === "object") for (const k in v) if (Object.hasOwn(v, k) && !allFinite(v[k])) return false;
  return true;
}

/** Whether the JSON text names one of `names` twice at its top level (serde refuses a
 * duplicate field of a struct; JSON.parse keeps the last). */
function duplicateField(bytes, names) {
  const text = utf8.decode(bytes);
  // Cheap first: a name written once (no escapes) cannot be a duplicate.
  if (!text.includes("\\") && names.every((n) => text.indexOf(`"${n}"`) === text.lastIndexOf(`"${n}"`))) return false;
  let depth = 0;
  const seen = new Set();
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === "{" || c === "[") depth++;
    else if (c === "}" || c === "]") depth--;
    else if (c === '"') {
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      if (depth === 1) {
        let k = j + 1;
        while (k < text.length && /\s/.test(text[k])) k++;
        if (text[k] === ":") {
          const name = JSON.parse(text.slice(i, j + 1));
          if (names.includes(name)) {
            if (seen.has(name)) return true;
            seen.add(name);
          }
        }
      }
      i = j;
    }
  }
  return false;
}

/** serde's `Option<String>`: absent or null is undefined, a string is itself, anything else
 * fails the whole struct (null is returned for "wrong type"). */
function optString(obj, name) {
  const v = obj[name];
  if (v === undefined || v === null) return undefined;
  return typeof v === "string" ? v : null;
}

const sha256 = (data) => createHash("sha256").update(data).digest();
const b64 = (buf) => Buffer.from(buf).toString("base64url");

/** base64url(SHA-256(token)): a proof's `ath`. */
export function ath(token) {
  return b64(sha256(Buffer.from(token, "ascii")));
}

/** The RFC 7638 thumbprint of a P-256 key with base64url coordinates `x`, `y`. */
export function thumbprint(x, y) {
  if (typeof x !== "string" || typeof y !== "string") throw new TypeError("thumbprint(x, y): the coordinates of a P-256 key");
  return b64(sha256(`{"crv":"P-256","kty":"EC","x":"${x}","y":"${y}"}`));
}

/** The RFC 7638 thumbprint of the Ed25519 key `x`. */
function okpThumbprint(x) {
  return b64(sha256(`{"crv":"Ed25519","kty":"OKP","x":"${x}"}`));
}

/** The y of each Ed25519 point of small order (the sign bit of x aside): 0, 1, p - 1 and the
 * two of order 8. A cofactorless verifier (OpenSSL's, node:crypto's) takes a "signature" with
 * R the identity and S = 0 under such a key for any message whose hash is a multiple of its
 * order. */
const SMALL_ORDER_Y = [
  "0000000000000000000000000000000000000000000000000000000000000000",
  "0100000000000000000000000000000000000000000000000000000000000000",
  "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
  "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
].map((h) => Buffer.from(h, "hex"));

/** Whether the 32 bytes `b` encode an Ed25519 point canonically (y < p = 2^255 - 19) and not
 * one of small order (tokenwarden_dpop's `strong_point`, dpop/src/jwk.rs); whether it is a
 * point at all, the verification finds out. */
function strongPoint(b) {
  const y = Buffer.from(b);
  y[31] &= 0x7f;
  const belowP = y[31] !== 0x7f || y[0] < 0xed || y.subarray(1, 31).some((v) => v !== 0xff);
  return belowP && !SMALL_ORDER_Y.some((s) => s.equals(y));
}

// ---------------------------------------------------------------------------------------------
// htu (dpop/src/htu.rs): WHATWG URLs on both sides (the url crate and Node's URL).

/** `{origin, path}` of an absolute http(s) URL without credentials, or null. */
export function normalizeUrl(raw) {
  if (typeof raw !== "string" || Buffer.byteLength(raw) > 2048) return null;
  let url;
  try {
    url = new URL(raw);
  } catch {
    return null;
  }
  if ((url.protocol !== "http:" && url.protocol !== "https:") || url.hostname === "") return null;
  if (url.username !== "" || url.password !== "") return null;
  return { origin: url.origin, path: url.pathname };
}

/** Whether keys may be fetched from `url`: `https://`, or `http://` to a loopback host (a
 * development machine) or when `insecure` allows it (dpop/src/feed.rs secure_enough). */
function secureEnough(url, insecure) {
  let u;
  try {
    u = new URL(url);
  } catch {
    return false;
  }
  return u.protocol === "https:" || (u.protocol === "http:" && (insecure || isLoopbackHost(u.host)));
}

/** Whether the JWKS at `jwksUri` is as trustworthy as the metadata of `authServer` that names
 * it: `https://` (or plain http where `insecure` allows it), or the auth server's own origin
 * (dpop/src/feed.rs keys_as_trusted). */
function keysAsTrusted(jwksUri, authServer, insecure) {
  const origin = (u) => normalizeUrl(u)?.origin ?? null;
  return secureEnough(jwksUri, insecure) || (origin(jwksUri) !== null && origin(jwksUri) === origin(authServer));
}

const insecure = (url) =>
  `${url}: the keys that verify every token would come over plain http; use https:// (http:// only to localhost, or set allowInsecureHttp)`;

/** `https://App.Example.com:443/` → `https://app.example.com`; null if not an origin. */
export function normalizeOrigin(raw) {
  if (typeof raw !== "string") return null;
  const trimmed = raw.trim();
  let url;
  try {
    url = new URL(trimmed);
  } catch {
    return null;
  }
  if ((url.protocol !== "http:" && url.protocol !== "https:") || url.hostname === "") return null;
  if (url.username !== "" || url.password !== "") return null;
  if (url.pathname !== "/" || url.search !== "" || url.hash !== "" || /[?#]/.test(trimmed)) return null;
  return url.origin;
}

/** The request's path as the htu parser would have left it; null for a path with a dot
 * segment (`.`, `..`, `%2e` in any case), a backslash or a control character
 * (dpop/src/htu.rs normalize_path). */
function normalizePath(path) {
  const dot = (seg) => /^(\.|%2e){1,2}$/i.test(seg);
  // Control characters too: the URL parser drops a tab or a line break (`/.\t./`: `/../`).
  if (!path.startsWith("/") || /[\\\x00-\x1f\x7f]/.test(path) || path.split("/").some(dot)) return null;
  try {
    return new URL(`http://h${path}`).pathname;
  } catch {
    return null;
  }
}

function originOfHost(scheme, host) {
  if (host === "" || /[/@?#\\]/.test(host)) return null;
  return normalizeOrigin(`${scheme}://${host}`);
}

/** `localhost` or a loopback address, with or without a port (server/src/dpop.rs). */
export function isLoopbackHost(host) {
  let name = host;
  const colon = host.lastIndexOf(":");
  if (colon >= 0 && /^[0-9]*$/.test(host.slice(colon + 1))) name = host.slice(0, colon);
  let end = name.length; // (not /\]+$/: quadratic on a long run of "]")
  while (end > 0 && name[end - 1] === "]") end--;
  name = name.slice(0, end).replace(/^\[+/, "");
  if (name.toLowerCase() === "localhost") return true;
  const v = isIP(name);
  if (v === 4) return name.split(".")[0] === "127";
  if (v === 6) {
    try {
      return new URL(`http://[${name}]/`).hostname === "[::1]";
    } catch {
      return false;
    }
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Nonces (dpop/src/nonce.rs).

function nonceTag(key, t) {
  const tb = Buffer.alloc(8);
  tb.writeBigInt64BE(BigInt(t));
  return { tb, tag: createHmac("sha256", key).update(NONCE_LABEL).update(tb).digest().subarray(0, NONCE_MAC_LEN) };
}

function nonceIssuedAt(key, t) {
  const { tb, tag } = nonceTag(key, t);
  return b64(Buffer.concat([tb, tag]));
}

/** Issue time (ms) of a nonce made with `key`, or null. */
function nonceTime(key, nonce) {
  if (typeof nonce !== "string" || nonce.length !== 43) return null;
  const bytes = b64decode(nonce);
  if (!bytes || bytes.length !== 8 + NONCE_MAC_LEN) return null;
  const t = bytes.readBigInt64BE(0);
  if (t > BigInt(Number.MAX_SAFE_INTEGER) || t < BigInt(Number.MIN_SAFE_INTEGER)) return null;
  const { tag } = nonceTag(key, t);
  return timingSafeEqual(tag, bytes.subarray(8)) ? Number(t) : null;
}

// ---------------------------------------------------------------------------------------------
// Replay stores.

/** Thrown by a replay store that has no room: the proof is refused ("replay cache full"). */
export class ReplayStoreFullError extends Error {
  constructor() {
    super(PROOF_TEXT.full);
    this.name = "ReplayStoreFullError";
  }
}

/** How far a routine prune of entries kept until a time (unix seconds) may go, as the crate's
 * `PruneHorizon`: to the clock's reading `t`, but no further than its reading when this was
 * made plus the time passed since on `elapsed` (monotonic, milliseconds). Pruned on the clock
 * alone while it was set forward, an entry would be forgotten, and what it refuses (a replayed
 * proof, a revoked token) would pass again once the clock is set back. */
function pruneHorizon(now, elapsed) {
  const at = Math.floor(now() / 1000);
  const since = elapsed();
  return (t) => Math.min(t, at + Math.floor((elapsed() - since) / 1000));
}

/** An in-memory replay store of at most `max` live entries; when full of live entries it
 * refuses new proofs (throws ReplayStoreFullError) rather than forgetting one. Entries are
 * filed by the second they expire in, so forgetting the expired ones visits only those: a
 * store kept full by a client sending proofs costs no scan of the whole map per claim (a
 * million entries were walked on the event loop for every proof refused). */
export function memoryReplayStore(options) {
  const { max = 1_000_000, now } = own(options, "memoryReplayStore's options");
  // The routine prune goes no further than `pruneHorizon` allows (a clock given as `now` is
  // both clocks); a full store prunes on the clock.
  const wall = now ?? Date.now;
  const horizon = pruneHorizon(wall, now ?? (() => performance.now()));
  const seen = new Map();
  const bySecond = new Map();
  let nextPrune = 0;
  let pruned = -Infinity;
  const prune = (t, full) => {
    const upto = full ? t : horizon(t);
    for (const [until, keys] of bySecond) {
      if (until >= upto) continue;
      for (const k of keys) if (seen.get(k) === until) seen.delete(k);
      bySecond.delete(until);
    }
    nextPrune = t + 5;
    pruned = t;
  };
  return {
    async claim(key, untilSecs) {
      const t = Math.floor(wall() / 1000);
      // An entry expires at a whole second: a second prune within the same second frees nothing.
      const full = seen.size >= max;
      if (t >= nextPrune || (full && t > pruned)) prune(t, full);
      const until = seen.get(key);
      if (until !== undefined && until >= t) return false;
      if (seen.size >= max) throw new ReplayStoreFullError();
      seen.set(key, untilSecs);
      const keys = bySecond.get(untilSecs);
      if (keys === undefined) bySecond.set(untilSecs, [key]);
      else keys.push(key);
      return true;
    },
    get size() {
      return seen.size;
    },
  };
}

/** A replay store in PostgreSQL, shared by every instance: `pool` is a `pg` Pool (or anything
 * with `query(text, params)` answering `{rows}`). The table is created on first use. */
export function postgresReplayStore(pool, options) {
  const { now = Date.now, table = "tokenwarden_dpop_proofs" } = own(options, "postgresReplayStore's options");
  if (!/^[a-z_][a-z0-9_]*$/.test(table)) throw new TypeError("table must be a plain SQL identifier");
  let ready = null;
  let nextPrune = 0;
  const setup = () =>
    (ready ??= pool
      .query(`CREATE TABLE IF NOT EXISTS ${table} (proof TEXT PRIMARY KEY, until BIGINT NOT NULL)`)
      .catch((e) => {
        // Two instances creating it at once: one of them is told the type already exists.
        if (e?.code === "23505" || e?.code === "42P07") return;
        ready = null;
        throw e;
      }));
  return {
    // Remembers across restarts and instances (createVerifier's refuseNoncesBefore).
    shared: true,
    async claim(key, untilSecs) {
      await setup();
      const t = Math.floor(now() / 1000);
      if (t >= nextPrune) {
        nextPrune = t + 60;
        // Ten minutes after they expired: an instance whose clock is ahead would otherwise
        // delete a proof the others still accept, and it could be replayed there.
        await pool.query(`DELETE FROM ${table} WHERE until < $1`, [t - 600]);
      }
      // The key hashes (jkt, jti): a row still there, expired or not, is this very proof, which
      // could not pass the iat check again anyway.
      const res = await pool.query(
        `INSERT INTO ${table} (proof, until) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING proof`,
        [key, untilSecs],
      );
      return res.rows.length === 1;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Requests.

/** Every value of header `name` (lower-case) from a Headers-like object or a plain object whose
 * values are strings or arrays of strings (Node's `headers` / `headersDistinct`). */
function headerValues(headers, name) {
  if (!headers) return [];
  if (typeof headers.get === "function" && typeof headers.has === "function") {
    const v = headers.get(name);
    return v === null ? [] : [v];
  }
  let v = headers[name];
  if (v === undefined) {
    for (const k of Object.keys(headers)) {
      if (k.toLowerCase() === name) {
        v = headers[k];
        break;
      }
    }
  }
  if (v === undefined || v === null) return [];
  return (Array.isArray(v) ? v : [v]).map(String);
}

/** `Authorization: Bearer|DPoP <token>` → [scheme, token], or null (tokenwarden_dpop::authorization). */
function authorization(value) {
  if (value === undefined || !/^[\x20-\x7e\t]*$/.test(value)) return null;
  const sp = value.indexOf(" ");
  if (sp < 0) return null;
  const scheme = value.slice(0, sp).toLowerCase();
  const token = value.slice(sp + 1).trim();
  if (token === "") return null;
  if (scheme === "bearer") return ["bearer", token];
  if (scheme === "dpop") return ["dpop", token];
  return null;
}

/** The path of a request target as it came: an absolute-form one (`GET http://host/a/b`)
 * loses its scheme and authority as text, nothing resolved (a URL parser would resolve its dot
 * segments before normalizePath could see them). */
function pathOf(url) {
  let s = String(url);
  if (!s.startsWith("/")) {
    const m = /^[a-z][a-z0-9+.-]*:\/\/[^/?#\\]*/i.exec(s);
    s = m ? s.slice(m[0].length) || "/" : s;
  }
  const q = s.search(/[?#]/);
  // `GET http://host?x`: the path is `/`, as the crate reads it.
  return (q >= 0 ? s.slice(0, q) : s) || "/";
}

// ---------------------------------------------------------------------------------------------
// Access tokens (dpop/src/access.rs, then server/src/tokens.rs's claims).

/** A token's time: a whole number of at most 2^53 − 1 in magnitude (the crate's `whole`). */
const isInt = (v) => Number.isSafeInteger(v);

/** The body of `res` as text, refused once it is over MAX_DOCUMENT_BYTES: at once when its
 * `Content-Length` says so, otherwise as soon as that many bytes have come (the rest unread). */
async function readCapped(res, url) {
  const tooLong = () => new Error(`GET ${url}: an answer over ${MAX_DOCUMENT_BYTES} bytes`);
  if (Number(res.headers.get("content-length")) > MAX_DOCUMENT_BYTES) {
    await res.body?.cancel?.()?.catch(() => {});
    throw tooLong();
  }
  if (!res.body) return res.text();
  const chunks = [];
  let n = 0;
  for await (const chunk of res.body) {
    n += chunk.byteLength;
    if (n > MAX_DOCUMENT_BYTES) throw tooLong();
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString("utf8");
}

/** The JWKS's usable keys: OKP Ed25519 with a kid, `alg` EdDSA or none, `use` sig or none, no
 * private member, a point of large order canonically encoded. */
function keySet(doc) {
  if (!isObject(doc) || !Object.hasOwn(doc, "keys") || !Array.isArray(doc.keys)) throw new Error("the JWKS is not a JSON object with a keys array");
  const keys = new Map();
  for (const k of doc.keys) {
    if (!isObject(k) || k.kty !== "OKP" || k.crv !== "Ed25519") continue;
    if (k.alg !== undefined && k.alg !== "EdDSA") continue;
    if (k.use !== undefined && k.use !== "sig") continue;
    // Published with its private half by mistake: anyone may sign with it.
    if (PRIVATE_MEMBERS.some((m) => Object.hasOwn(k, m))) continue;
    if (typeof k.kid !== "string" || typeof k.x !== "string") continue;
    const x = b64decode(k.x);
    // A key of small order (or not encoded canonically) is no key: under it, anyone can sign
    // any token for OpenSSL's cofactorless check (the crate's verify_strict refuses it too).
    if (!x || x.length !== 32 || !strongPoint(x)) continue;
    try {
      keys.set(k.kid, createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: k.x }, format: "jwk" }));
    } catch {}
  }
  if (keys.size === 0) throw new Error("the JWKS has no usable Ed25519 key");
  return keys;
}

/** The server's claims struct (AccessClaims): every one of them required, of its type. */
function serverClaims(c) {
  const str = (n) => typeof c[n] === "string";
  if (!["iss", "aud", "sub", "sid", "jti", "email", "name"].every(str)) return false;
  if (![c.iat, c.nbf, c.exp].every(isInt)) return false;
  // Absent, or of its type (`null` is neither: the server never writes one, and reads none).
  if (c.roles !== undefined && !(Array.isArray(c.roles) && c.roles.every((r) => typeof r === "string"))) return false;
  if (c.email_verified !== undefined && typeof c.email_verified !== "boolean") return false;
  return true;
}

// ---------------------------------------------------------------------------------------------
// The verifier.

/** The options createVerifier reads (pkg/verify.d.ts VerifierOptions): any other is a typo. */
const VERIFIER_OPTIONS = [
  "authServer",
  "allowInsecureHttp",
  "publicOrigin",
  "audience",
  "issuer",
  "leewaySecs",
  "nonceSecret",
  "allowBearer",
  "replayStore",
  "refuseNoncesBefore",
  "revocationToken",
  "maxStalenessMs",
  "onStale",
  "now",
  "fetch",
];

/**
 * @param {import("./verify.d.ts").VerifierOptions} options
 * @returns {Promise<import("./verify.d.ts").Verifier>}
 */
export async function createVerifier(options = {}) {
  // A misspelt option would fall back to its default without a word: `publicOrigins` for
  // `publicOrigin` leaves only a loopback Host trusted, and every proof is refused.
  for (const k of Object.keys(options ?? {}))
    if (!VERIFIER_OPTIONS.includes(k)) throw new TypeError(`unknown option ${JSON.stringify(k)} (createVerifier takes ${VERIFIER_OPTIONS.join(", ")})`);
  // The caller's own options only: one left out is never looked up on Object.prototype, where
  // a polluted `replayStore`, `fetch` or `allowBearer` would otherwise be taken for it.
  options = own(options, "createVerifier's options");
  const {
    authServer,
    leewaySecs = 5,
    allowBearer = false,
    now = Date.now,
    maxStalenessMs = 30_000,
    onStale = "refuse",
    revocationToken,
    allowInsecureHttp = false,
  } = options;
  const doFetch = options.fetch ?? globalThis.fetch;
  // Intervals (the feed's staleness, the JWKS's age) on a monotonic clock, as the crate's
  // `Instant`s: a wall clock set back an hour would keep a silent feed's view fresh an hour
  // longer, and the JWKS an hour past its age. The wall clock is for what carries a time (a
  // token's, a proof's, a nonce's, the feed's keepalives). A clock given as `now` is both.
  const elapsed = options.now === undefined ? () => performance.now() : now;
  if (typeof authServer !== "string" || !/^https?:\/\//.test(authServer))
    throw new TypeError("authServer must be the auth server's http(s) URL");
  // Its keys verify every token: over plain http to another machine anyone on the path could
  // hand this API keys of their own (dpop/src/feed.rs secure_enough).
  if (!secureEnough(authServer, allowInsecureHttp === true)) throw new TypeError(insecure(authServer));
  const base = authServer.replace(/\/+$/, "");
  if (!Number.isInteger(leewaySecs) || leewaySecs < 0 || leewaySecs > 30)
    throw new RangeError("leewaySecs must be an integer from 0 to 30");
  if (onStale !== "refuse" && onStale !== "accept") throw new TypeError('onStale must be "refuse" or "accept"');
  if (typeof maxStalenessMs !== "number" || !Number.isFinite(maxStalenessMs) || maxStalenessMs < 0)
    throw new RangeError("maxStalenessMs must be a number of milliseconds, 0 or more (onStale: \"accept\" for a view never refused)");
  // The auth server's feed token (`--revocation-feed-token-file`) is at least 32 characters: an
  // empty or short one (an environment variable set to nothing) would only show as a feed
  // refused for good, every request a 503. (`null`: no feed, said on purpose.)
  if (revocationToken != null && (typeof revocationToken !== "string" || revocationToken.trim().length < 32))
    throw new TypeError("revocationToken must be the auth server's revocation feed token (32 characters or more), or null for none");
  let nonceKey;
  if (options.nonceSecret !== undefined) {
    // Trimmed, as the auth server reads its secret files: a secret read from a file with its
    // newline made another key, and every nonce of the one an extra round trip in the other.
    nonceKey = Buffer.from(String(options.nonceSecret).trim(), "utf8");
    if (nonceKey.length < 32) throw new RangeError("nonceSecret must be at least 32 bytes");
  } else {
    nonceKey = randomBytes(32);
  }
  const origins = [];
  for (const o of [options.publicOrigin ?? []].flat()) {
    const n = normalizeOrigin(o);
    if (!n) throw new TypeError(`publicOrigin ${JSON.stringify(o)} is not an http(s) origin`);
    origins.push(n);
  }
  const replayStore = options.replayStore ?? memoryReplayStore({ max: 1_000_000, now: options.now });
  // A replay cache in memory starts empty: a proof accepted just before a restart would pass
  // again after it, unless the nonces of before the start are refused (dpop/src/nonce.rs
  // not_before_ms; the reference server does the same on one instance). A shared store
  // remembers across restarts.
  // Whole milliseconds (a nonce's time is one; `performance.timeOrigin` is not).
  // A clock that is no unix milliseconds (seconds, say) would refuse every nonce or none.
  if (!(now() >= 1e12)) throw new TypeError("now must return the time in unix milliseconds");
  const refuseNoncesBefore = Math.floor(options.refuseNoncesBefore ?? (replayStore.shared === true ? 0 : now()));
  // Milliseconds, not ahead: a time in seconds would refuse nothing, one in microseconds (or
  // ahead) every nonce until then.
  if (!Number.isFinite(refuseNoncesBefore) || (refuseNoncesBefore !== 0 && (refuseNoncesBefore < 1e12 || refuseNoncesBefore > now() + NONCE_MAX_FUTURE_MS)))
    throw new TypeError("refuseNoncesBefore must be 0 or a time in milliseconds, not ahead of now");
  if (typeof replayStore.claim !== "function") throw new TypeError("replayStore must have claim(key, untilSecs)");

  // The auth server's metadata (RFC 8414); an older server has none: its JWKS path.
  // Bounded: a refetch that hangs would keep a view stale after a keys event (below). Never
  // from a shared cache (a CDN in front of the JWKS): a refetch after a key was revoked would
  // get the copy that still lists it.
  const getJson = async (url, init) => {
    const res = await doFetch(url, {
      ...init,
      headers: { accept: "application/json", "cache-control": "no-cache", ...init?.headers },
      signal: AbortSignal.timeout(10_000),
      // A redirect is no answer (below: not ok): the keys come from the URL checked here.
      redirect: "manual",
    });
    if (!res.ok) {
      const e = new Error(`GET ${url}: ${res.status}`);
      e.status = res.status;
      throw e;
    }
    return { json: JSON.parse(await readCapped(res, url)), res };
  };
  let metadata = {};
  try {
    // Its own members only (a member it lacks is not looked up on Object.prototype).
    const json = (await getJson(`${base}/.well-known/oauth-authorization-server`)).json;
    metadata = { __proto__: null, ...(isObject(json) ? json : {}) };
  } catch (e) {
    if (e.status !== 404) throw e;
  }
  const issuer = options.issuer ?? (typeof metadata.issuer === "string" ? metadata.issuer : "tokenwarden");
  const audience =
    options.audience ?? (typeof metadata.tokenwarden_audience === "string" ? metadata.tokenwarden_audience : "tokenwarden-api");
  const jwksUri = typeof metadata.jwks_uri === "string" ? metadata.jwks_uri : `${base}/.well-known/jwks.json`;
  if (!keysAsTrusted(jwksUri, base, allowInsecureHttp === true)) throw new Error(insecure(jwksUri));
  const algs = metadata.dpop_signing_alg_values_supported;
  if (Array.isArray(algs) && !algs.some((a) => PROOF_ALGS.includes(a)))
    throw new Error(`the auth server accepts none of ${PROOF_ALGS.join(", ")} for DPoP (dpop_signing_alg_values_supported)`);

  // JWKS: Cache-Control max-age honoured; an unknown kid refetches, at most once per 10 s.
  let keys = new Map();
  let keysExpire = 0;
  let lastFetch = -Infinity;
  let inflight = null;
  const fetchKeys = () =>
    (inflight ??= (async () => {
      lastFetch = elapsed();
      try {
        const { json, res } = await getJson(jwksUri);
        keys = keySet(json);
        const m = /(?:^|,)\s*max-age\s*=\s*(\d+)/i.exec(res.headers.get("cache-control") ?? "");
        // At most a minute, whatever max-age says (the crate refetches every minute too): a
        // key revoked at the auth server is gone here within a minute even without the feed.
        // At least 10 s: `max-age=0` is no reason to fetch the keys for every request.
        const maxAge = Math.min(m ? Number(m[1]) * 1000 : JWKS_DEFAULT_MAX_AGE_MS, JWKS_DEFAULT_MAX_AGE_MS);
        keysExpire = elapsed() + Math.max(maxAge, JWKS_MIN_REFETCH_MS);
      } finally {
        inflight = null;
      }
    })());
  // A fetch that starts after now: one in flight may have left before the key ring changed
  // (the feed's `keys` event: a key retired, which a fetch begun earlier may still list).
  const fetchKeysAfter = async () => {
    const earlier = inflight;
    if (earlier) await earlier.catch(() => {});
    return fetchKeys();
  };
  await fetchKeys();
  /** Whether the keys are as fetched now (false: the fetch failed, the old keys kept). */
  const refreshKeys = async (force) => {
    // A fetch under way (one begun beside a request when the keys' age passed) may bring the
    // kid asked for: waited for, not taken for a refetch done.
    if (!force && inflight) await inflight.catch(() => {});
    if (!force && elapsed() - lastFetch < JWKS_MIN_REFETCH_MS) {
      // Another waiter began a fetch meanwhile: its keys, not a refusal.
      if (inflight) await inflight.catch(() => {});
      return true;
    }
    try {
      await (force ? fetchKeysAfter() : fetchKeys());
      return true;
    } catch (e) {
      keysExpire = elapsed() + JWKS_MIN_REFETCH_MS; // keep the old keys meanwhile
      console.warn(`tokenwarden/verify: refetching the JWKS failed: ${e?.message ?? e}`);
      return false;
    }
  };

  // Tokens whose signature passed: token -> {kid, claims} (server/src/access.rs).
  const verified = new Map();
  // Proof keys, parsed (a session signs every proof with one key; parsing costs as much as a
  // verification). A point off the curve throws and is never kept.
  const proofKeys = new Map();
  const proofKey = (x, y) => {
    const id = `${x}.${y}`;
    let key = proofKeys.get(id);
    if (!key) {
      const jwk = y === undefined ? { kty: "OKP", crv: "Ed25519", x } : { kty: "EC", crv: "P-256", x, y };
      key = createPublicKey({ key: jwk, format: "jwk" });
      if (proofKeys.size >= TOKEN_CACHE_CAPACITY) proofKeys.clear();
      proofKeys.set(id, key);
    }
    return key;
  };

  const nonceNowMs = () => Math.floor(now() / 1000) * 1000;
  const currentNonce = () => {
    const s = Math.floor(now() / 1000);
    const windowStart = (s - (((s % NONCE_WINDOW) + NONCE_WINDOW) % NONCE_WINDOW)) * 1000;
    return nonceIssuedAt(nonceKey, Math.max(windowStart, refuseNoncesBefore));
  };
  const nonceAccepted = (nonce) => {
    const t = nonceTime(nonceKey, nonce);
    const n = nonceNowMs();
    return t !== null && t >= refuseNoncesBefore && t <= n + NONCE_MAX_FUTURE_MS && n - t < NONCE_LIFETIME_MS;
  };

  async function verifyToken(token, nowSecs) {
    const hit = verified.get(token);
    // A copy for every request: the app may change what it is handed (req.auth), and the
    // cache's own object decides the next request with this token (its exp, its cnf).
    if (hit && keys.has(hit.kid)) return structuredClone(checkTimes(hit.claims, nowSecs));
    if (token.length > MAX_TOKEN_LEN) throw new TokenRefusal("malformed");
    const parts = token.split(".");
    if (parts.length !== 3) throw new TokenRefusal("malformed");
    const [h64, p64, s64] = parts;
    const hb = b64decode(h64);
    const header = hb && parseJson(hb);
    if (!isObject(header) || duplicateField(hb, ["alg", "typ", "kid", "crit"])) throw new TokenRefusal("malformed");
    // Extensions marked critical (RFC 7515 §4.1.11): none is understood (the auth server's tokens
    // never carry one).
    if (header.crit !== undefined && header.crit !== null) throw new TokenRefusal("malformed");
    const alg = optString(header, "alg");
    const typ = optString(header, "typ");
    const kid = optString(header, "kid");
    if (alg === null || typ === null || kid === null) throw new TokenRefusal("malformed");
    if (alg !== "EdDSA") throw new TokenRefusal("algorithm");
    if (typ !== "at+jwt") throw new TokenRefusal("type");
    if (kid === undefined) throw new TokenRefusal("unknownKey");
    if (!keys.has(kid)) await refreshKeys(false);
    const key = keys.get(kid);
    if (!key) throw new TokenRefusal("unknownKey");
    const sig = b64decode(s64);
    if (!sig) throw new TokenRefusal("malformed");
    // R of small order refused as in a proof (and as by the crate's verify_strict).
    if (sig.length !== 64 || !strongPoint(sig.subarray(0, 32)) || !cryptoVerify(null, Buffer.from(`${h64}.${p64}`), key, sig))
      throw new TokenRefusal("signature");
    const pb = b64decode(p64);
    const claims = pb && parseJson(pb);
    if (!isObject(claims) || !allFinite(claims)) throw new TokenRefusal("claims");
    if (claims.iss !== issuer || claims.aud !== audience) throw new TokenRefusal("claims");
    if (typeof claims.sub !== "string" || !isInt(claims.exp)) throw new TokenRefusal("claims");
    if (claims.exp + leewaySecs <= nowSecs) throw new TokenRefusal("expired");
    if (isInt(claims.nbf) && claims.nbf - leewaySecs > nowSecs) throw new TokenRefusal("notYetValid");
    // Own members only, here and below: a `cnf` planted on Object.prototype would make every
    // unbound token look bound to its key.
    if (Object.hasOwn(claims, "cnf")) {
      const jkt = isObject(claims.cnf) && Object.hasOwn(claims.cnf, "jkt") ? claims.cnf.jkt : undefined;
      if (typeof jkt !== "string" || jkt.length !== 43) throw new TokenRefusal("claims");
    }
    if (!serverClaims(claims)) throw new TokenRefusal("claims");
    if (verified.size >= TOKEN_CACHE_CAPACITY) verified.clear();
    verified.set(token, { kid, claims });
    return structuredClone(claims);
  }

  function checkTimes(claims, nowSecs) {
    if (claims.exp + leewaySecs <= nowSecs) throw new TokenRefusal("expired");
    if (claims.nbf - leewaySecs > nowSecs) throw new TokenRefusal("notYetValid");
    return claims;
  }

  /** dpop/src/proof.rs, step by step. Returns {jkt, jti, iat}; throws ProofRefusal. */
  async function verifyProof(values, expected) {
    if (values.length === 0) throw new ProofRefusal("missing");
    if (values.length > 1) throw new ProofRefusal("multiple");
    const proof = values[0];
    // 1. shape
    if (proof.length === 0 || Buffer.byteLength(proof, "latin1") > MAX_PROOF_LEN) throw new ProofRefusal("malformed");
    const parts = proof.split(".");
    if (parts.length !== 3) throw new ProofRefusal("malformed");
    const [h64, p64, s64] = parts;
    const hb = b64decode(h64);
    const pb = b64decode(p64);
    const signature = b64decode(s64);
    if (!hb || !pb || !signature) throw new ProofRefusal("malformed");
    const header = parseJson(hb);
    if (!isObject(header) || duplicateField(hb, ["typ", "alg", "jwk", "crit"])) throw new ProofRefusal("malformed");
    if (!allFinite(header.jwk) || !allFinite(header.crit)) throw new ProofRefusal("malformed");
    const typ = optString(header, "typ");
    const alg = optString(header, "alg");
    if (typ === null || alg === null) throw new ProofRefusal("malformed");
    // 2. typ, 3. alg, crit
    if (typ !== "dpop+jwt") throw new ProofRefusal("type");
    if (!PROOF_ALGS.includes(alg)) throw new ProofRefusal("algorithm");
    if (header.crit !== undefined && header.crit !== null) throw new ProofRefusal("critical");
    // 4. jwk, of the kind its alg names: EC P-256 for ES256, OKP Ed25519 (a strong point) for EdDSA
    const jwk = header.jwk, ed = alg !== "ES256";
    if (!isObject(jwk) || PRIVATE_MEMBERS.some((m) => Object.hasOwn(jwk, m))) throw new ProofRefusal("key");
    if (ed ? jwk.kty !== "OKP" || jwk.crv !== "Ed25519" : jwk.kty !== "EC" || jwk.crv !== "P-256") throw new ProofRefusal("key");
    for (const c of ed ? ["x"] : ["x", "y"]) {
      const v = jwk[c];
      if (typeof v !== "string" || v.length !== 43) throw new ProofRefusal("key");
      const bytes = b64decode(v);
      if (!bytes || bytes.length !== 32 || (ed && !strongPoint(bytes))) throw new ProofRefusal("key");
    }
    // 5. signature (64 bytes: ES256's r || s, or Ed25519's with R not of small order; OpenSSL
    // checks S < L); a point off the curve fails here
    let ok = false;
    if (signature.length === 64 && (!ed || strongPoint(signature.subarray(0, 32)))) {
      try {
        const data = Buffer.from(`${h64}.${p64}`, "latin1");
        ok = ed
          ? cryptoVerify(null, data, proofKey(jwk.x), signature)
          : cryptoVerify("sha256", data, { key: proofKey(jwk.x, jwk.y), dsaEncoding: "ieee-p1363" }, signature);
      } catch {
        ok = false;
      }
    }
    if (!ok) throw new ProofRefusal("signature");
    // 6. claims
    const claims = parseJson(pb);
    if (!isObject(claims) || duplicateField(pb, ["jti", "htm", "htu", "iat", "ath", "nonce"]))
      throw new ProofRefusal("claims");
    const jti = optString(claims, "jti");
    const htm = optString(claims, "htm");
    const htu = optString(claims, "htu");
    const athClaim = optString(claims, "ath");
    const nonce = optString(claims, "nonce");
    if ([jti, htm, htu, athClaim, nonce].includes(null)) throw new ProofRefusal("claims");
    if (claims.iat !== undefined && claims.iat !== null && typeof claims.iat !== "number") throw new ProofRefusal("claims");
    if (jti === undefined || htm === undefined || htu === undefined || claims.iat === undefined || claims.iat === null)
      throw new ProofRefusal("claims");
    if (jti.length === 0 || [...jti].length > 128) throw new ProofRefusal("claims");
    let iat = claims.iat;
    // The crate's `numeric_date`: any number under 1e15 in magnitude, however written.
    if (!(Number.isFinite(iat) && Math.abs(iat) < 1e15)) throw new ProofRefusal("claims");
    iat = Math.trunc(iat);
    // 7. htm
    if (htm !== expected.method) throw new ProofRefusal("method");
    // 8. htu
    const url = normalizeUrl(htu);
    if (!url) throw new ProofRefusal("url");
    let originOk;
    if (origins.length > 0) originOk = origins.includes(url.origin);
    else if (isLoopbackHost(expected.host))
      originOk = ["http", "https"].some((s) => originOfHost(s, expected.host) === url.origin);
    else originOk = false;
    if (!originOk) throw new ProofRefusal("url");
    if (url.path !== expected.path && normalizePath(expected.path) !== url.path) throw new ProofRefusal("url");
    // 9. iat
    if (iat < expected.now - PROOF_MAX_AGE) throw new ProofRefusal("stale");
    if (iat > expected.now + PROOF_MAX_FUTURE) throw new ProofRefusal("future");
    // 10. ath
    if (athClaim !== ath(expected.token)) throw new ProofRefusal("ath");
    // 11. nonce
    if (nonce === undefined || !nonceAccepted(nonce)) throw new ProofRefusal("nonce");
    // 12. binding
    const jkt = ed ? okpThumbprint(jwk.x) : thumbprint(jwk.x, jwk.y);
    if (jkt !== expected.jkt) throw new ProofRefusal("keyMismatch");
    // 13. jti, recorded until the proof could no longer pass the iat check
    const key = b64(createHash("sha256").update(jkt).update(Buffer.from([0])).update(jti).digest());
    let fresh;
    try {
      fresh = await replayStore.claim(key, iat + PROOF_MAX_AGE + 1);
    } catch (e) {
      if (e instanceof ReplayStoreFullError || e?.name === "ReplayStoreFullError") throw new ProofRefusal("full");
      throw e;
    }
    if (fresh !== true) throw new ProofRefusal("replayed");
    return { jkt, jti, iat };
  }

  const revocations = revocationFeed({
    // Trimmed, as the auth server reads its token file.
    token: typeof revocationToken === "string" ? revocationToken.trim() : revocationToken,
    endpoint: metadata.tokenwarden_revocations_endpoint,
    authOrigin: new URL(base).origin,
    leewaySecs,
    fetch: doFetch,
    now,
    elapsed,
    maxStalenessMs,
    onKeys: () => refreshKeys(true),
  });

  async function verifyRequest({ method, url, headers } = {}) {
    const nowMs = now();
    const nowSecs = Math.floor(nowMs / 1000);
    const auth = authorization(headerValues(headers, "authorization")[0]);
    if (!auth) throw missingToken();
    const [scheme, token] = auth;
    const dpopScheme = scheme === "dpop";
    // The keys' age passed: fetched again beside this request, which goes on with the keys
    // held (a JWKS that answers slowly must not hold a request for its 10 s timeout).
    if (elapsed() >= keysExpire && !inflight) void refreshKeys(true).catch(() => {});
    let claims;
    try {
      claims = await verifyToken(token, nowSecs);
    } catch (e) {
      if (e instanceof TokenRefusal) throw invalidToken(e.why, dpopScheme);
      throw e;
    }
    // Revocations: the feed's view (refused when it is stale, unless configured otherwise).
    if (revocations.enabled && !revocations.fresh()) {
      if (onStale === "refuse")
        throw new VerifyError(503, "temporarily_unavailable", "the revocation feed is unavailable; retry later", {
          "Retry-After": "5",
        });
      revocations.warnStale();
    }
    if (revocations.isRevoked(claims.jti, claims.sid, nowSecs)) throw invalidToken("revoked", dpopScheme);
    // The binding (server/src/dpop.rs check_resource).
    const bound = Object.hasOwn(claims, "cnf");
    if (!dpopScheme && bound) throw invalidToken("bound", true);
    if (!dpopScheme && !allowBearer) throw invalidToken("dpopRequired", true);
    if (!dpopScheme) return claims;
    if (!bound) throw invalidToken("notBound", true);
    try {
      await verifyProof(headerValues(headers, "dpop"), {
        method,
        path: pathOf(url),
        host: headerValues(headers, "host")[0] ?? "",
        token,
        jkt: claims.cnf.jkt,
        now: nowSecs,
      });
    } catch (e) {
      if (e instanceof ProofRefusal) throw proofError(e.why, currentNonce());
      throw e;
    }
    return claims;
  }

  async function verify(request) {
    // A missing method is the caller's mistake, said as one (never taken for GET: a GET proof
    // would then pass on a POST).
    if (typeof request?.method !== "string") throw new TypeError("verify({ method, url, headers }): method is required");
    // The same for the target: taken for `/`, a proof made for `/` would pass on any path.
    if (typeof request.url !== "string" || request.url === "") throw new TypeError("verify({ method, url, headers }): url is required");
    try {
      return await verifyRequest(request);
    } catch (e) {
      if (e instanceof VerifyError) throw e;
      // A store or network failure: the server's 500 (details logged, never sent).
      console.error("tokenwarden/verify: internal error:", e);
      throw new VerifyError(500, "server_error", "internal error", {});
    }
  }

  const errorBody = (e) => JSON.stringify(e.toJSON());
  const answerHeaders = (e) => ({ ...e.headers, "Cache-Control": "no-store", "Content-Type": "application/json" });

  return {
    verify,
    nonce: currentNonce,
    issuer,
    audience,
    revocations: { status: () => revocations.status(), add: revocations.add },
    express() {
      return (req, res, next) => {
        res.setHeader("DPoP-Nonce", currentNonce());
        verify({ method: req.method, url: req.originalUrl ?? req.url, headers: req.headersDistinct ?? req.headers }).then(
          (claims) => {
            req.auth = claims;
            next();
          },
          (e) => {
            // Not a refusal (a request without its method or url): the app's error handler.
            if (!(e instanceof VerifyError)) return next(e);
            // Answered meanwhile (a timeout middleware): nothing to add, and no throw here (an
            // unhandled rejection ends a Node process).
            if (res.headersSent) return;
            for (const [k, v] of Object.entries(answerHeaders(e))) res.setHeader(k, v);
            res.statusCode = e.status;
            res.end(errorBody(e));
          },
        ).catch(next);
      };
    },
    koa() {
      return async (ctx, next) => {
        ctx.set("DPoP-Nonce", currentNonce());
        let claims;
        try {
          claims = await verify({ method: ctx.method, url: ctx.originalUrl ?? ctx.url, headers: ctx.req.headersDistinct ?? ctx.headers });
        } catch (e) {
          if (!(e instanceof VerifyError)) throw e;
          ctx.status = e.status;
          for (const [k, v] of Object.entries(answerHeaders(e))) ctx.set(k, v);
          ctx.body = errorBody(e);
          ctx.type = "application/json";
          return;
        }
        ctx.state.auth = claims;
        await next();
      };
    },
    fastify() {
      return async (request, reply) => {
        reply.header("DPoP-Nonce", currentNonce());
        try {
          request.auth = await verify({ method: request.method, url: request.raw.url ?? request.url, headers: request.raw.headersDistinct ?? request.headers });
        } catch (e) {
          if (!(e instanceof VerifyError)) throw e;
          reply.code(e.status).headers(answerHeaders(e)).send(errorBody(e));
          return reply;
        }
      };
    },
    close() {
      revocations.close();
    },
  };
}

// ---------------------------------------------------------------------------------------------
// The revocation feed (server/src/feed.rs): Server-Sent Events.

/** A feed connection that sends nothing for this long is given up (the server's keepalive
 * comes every 15 s; server/src/feed.rs). */
const FEED_IDLE_MS = 45_000;
/** Revocations kept at most (dpop/src/feed.rs MAX_ENTRIES): the ended ones go first, and while
 * all are in force one more is not kept and the view is stale (fail closed) until the one dropped
 * no longer matters (its until, the leeway and a second), whatever room is made. */
const MAX_REVOCATIONS = 1_000_000;

function revocationFeed({ token, endpoint, authOrigin, fetch: doFetch, now, elapsed, maxStalenessMs, onKeys, leewaySecs }) {
  const sessions = new Map();
  const tokens = new Map();
  // Ended entries go every 5 s, no further than `pruneHorizon` allows. At a million (a bound
  // against a feed gone wrong, the crate's), the clock decides alone.
  const horizon = pruneHorizon(now, elapsed);
  let nextPrune = -Infinity;
  const prune = (upto) => {
    for (const m of [sessions, tokens]) for (const [k, u] of m) if (u + leewaySecs < upto) m.delete(k);
  };
  // When full: pruned once a second at most (each walks every entry; before, every revocation
  // arriving while full did). One that could not be kept leaves the view stale until it no
  // longer matters (`droppedUntil`, unix seconds), whatever room there is meanwhile: no
  // resumption sends it again.
  let fullPruned = -Infinity;
  let droppedUntil = -Infinity;
  const overfull = () => Math.floor(now() / 1000) < droppedUntil;
  const full = () => sessions.size + tokens.size >= MAX_REVOCATIONS;
  const add = (kind, id, until) => {
    if (typeof id !== "string" || id === "" || id.length > 256 || !Number.isFinite(until)) return;
    const map = kind === "session" ? sessions : kind === "token" ? tokens : null;
    if (!map) return;
    const t = Math.floor(now() / 1000);
    if (full() && t > fullPruned) {
      fullPruned = t;
      prune(t);
    }
    const kept = map.get(id);
    if (kept === undefined && full()) {
      droppedUntil = Math.max(droppedUntil, until + leewaySecs + 1);
      return;
    }
    if ((kept ?? -Infinity) < until) map.set(id, until);
  };
  const isRevoked = (jti, sid, nowSecs) => {
    if (nowSecs >= nextPrune) {
      prune(horizon(nowSecs));
      nextPrune = nowSecs + 5;
    }
    // `until` counts the auth server's leeway; this verifier's may be larger. In force through
    // its `until` second, as the crate's `is_revoked` (`until >= now`).
    const t = nowSecs - leewaySecs;
    return (tokens.get(jti) ?? -Infinity) >= t || (sessions.get(sid) ?? -Infinity) >= t;
  };
  const started = elapsed();
  const state = { connected: false, lastEventId: null, lastActivity: null, ready: false, warned: false, failing: false, catchingUp: true };
  const base = {
    add,
    isRevoked,
    enabled: token != null,
    fresh: () => true,
    warnStale() {},
    status: () => ({ connected: state.connected, lastEventId: state.lastEventId, staleForMs: 0 }),
    close() {},
  };
  if (token == null) {
    // Left out (an environment variable that was not set?) while the auth server has a feed:
    // said, since a logout then reaches this API only at the token's exp. `null`: on purpose.
    if (token === undefined && typeof endpoint === "string")
      console.warn(
        "tokenwarden/verify: the auth server has a revocation feed and no revocationToken is set: revoked tokens pass until their exp (revocationToken: null to say this is meant)",
      );
    return base;
  }
  if (typeof endpoint !== "string")
    throw new Error("revocationToken is set but the auth server's metadata has no tokenwarden_revocations_endpoint");
  // The service token goes to the auth server's own origin only, whatever the metadata says.
  if (normalizeOrigin(new URL(endpoint, authOrigin).origin) !== normalizeOrigin(authOrigin) || !/^https?:\/\//.test(endpoint))
    throw new Error(`the revocation feed ${endpoint} is not on the auth server's origin ${authOrigin}`);

  let closed = false;
  let controller = null;
  let timer = null;
  let backoff = 250;
  const staleFor = () => {
    const t = elapsed();
    // 0 exactly while fresh: a stale view reports at least 1.
    if (!state.ready || keys.since !== null || overfull()) return Math.max(1, t - (keys.since ?? started));
    const over = t - state.lastActivity - maxStalenessMs;
    return over > 0 ? over : 0;
  };
  const fresh = () => state.ready && keys.since === null && !overfull() && elapsed() - state.lastActivity <= maxStalenessMs;
  // A `keys` event (a key retired) whose JWKS refetch failed: the old keys may still hold the
  // retired one, so the view is stale (as the Rust feed, which starts over) until a refetch
  // after it succeeds; tried again every 5 s meanwhile. While the refetch is out the view stays
  // as it was: a key rotation costs no request a 503.
  const keys = { since: null, timer: null, again: null, againStrict: false, lastEvent: 0, n: 0 };
  const keysChanged = () => {
    clearTimeout(keys.timer);
    const n = ++keys.n; // only the latest refetch's outcome counts
    Promise.resolve(onKeys()).then((ok) => {
      if (n !== keys.n) return;
      if (ok) keys.since = null;
      else if (!closed) {
        keys.since ??= elapsed();
        keys.timer = setTimeout(keysChanged, 5000);
        keys.timer.unref?.();
      }
    });
  };
  // Behind a load balancer, the instance that answers the refetch may not have heard of the
  // change yet (its NOTIFY comes a moment later, its catch-up read within half a second) and
  // serve the list that still holds a revoked key: once more, KEYS_AGAIN_MS later (the crate's
  // `Again`), when an instance that has not applied it answers 503. After a `keys` event
  // (`strict`) its failure leaves the view stale, as the first fetch's; after a `ready`, where
  // no change is known, it changes nothing (a JWKS that fails is no outage of the API). The
  // earliest one due is kept (events that keep coming do not put it off), a keys event's over a
  // ready's; when it is made, one more is due for a keys event that came since.
  const armAgain = (strict, delay) => {
    clearTimeout(keys.again);
    keys.againStrict = strict;
    keys.again = setTimeout(() => {
      keys.again = null;
      if (!strict) return void onKeys();
      keysChanged();
      const later = keys.lastEvent + KEYS_AGAIN_MS - performance.now();
      if (later > 0) armAgain(true, later);
    }, delay);
    keys.again.unref?.();
  };
  const keysAgain = (strict) => {
    // On the timers' clock (monotonic, and never a test's `now`): it sets a timer's delay.
    if (strict) keys.lastEvent = performance.now();
    if (keys.again === null || (strict && !keys.againStrict)) armAgain(strict, KEYS_AGAIN_MS);
  };
  const keysEvent = () => {
    keysChanged();
    keysAgain(true);
  };
  // The feed said it is alive (its `ready` or a keepalive) at the auth server's time `sent`
  // (unix seconds; undefined from a server that does not say). A stream held back on its way
  // counts as heard that much earlier: what it brings is that late. A second is allowed for the
  // whole seconds; a clock ahead of the auth server's counts as lag too (keep both in sync, as
  // tokens need). As the crate's Revocations::heard.
  const touch = (sent) => {
    const lag = Number.isSafeInteger(sent) ? Math.max(0, Math.floor(now() / 1000) - sent - 1) : 0;
    state.lastActivity = elapsed() - lag * 1000;
    state.warned = false;
    if (lag > LATE_WARNING_SECS && !state.lagWarned) {
      state.lagWarned = true;
      console.warn(
        `tokenwarden/verify: the revocation feed's news arrive ${lag} s after the auth server sent them (something on the way holds them back, or this machine's clock is ahead of the auth server's): the view is that much staler`,
      );
    }
  };

  function dispatch(event, data, id) {
    if (id !== undefined) state.lastEventId = id;
    let json;
    try {
      json = JSON.parse(data);
    } catch {
      json = undefined;
    }
    if (event === "revoked" && isObject(json)) add(json.kind, json.id, json.until);
    else if (event === "ready") {
      // Every connection's: a `keys` event sent before it (while away, or between the keys
      // fetched at the start and the snapshot) is not in what it caught up with (a snapshot
      // holds none), so the keys are fetched again, as the crate does at every `ready`.
      // A view that is not current (the first connection's, or one after an outage) stays
      // stale until they are: the keys held may list one retired meanwhile (the crate fetches
      // them before it counts the feed heard). A current one stays current while they are out.
      if (!fresh()) keys.since ??= elapsed();
      keysChanged();
      keysAgain(false);
      state.ready = true;
      // A server that says when it sent its `ready` says it in each keepalive: a comment
      // without a time is then something else's on the way (a proxy's), and keeps nothing
      // current.
      state.timed = isObject(json) && Number.isSafeInteger(json.now);
      state.catchingUp = false;
      backoff = 250;
    } else if (event === "keys") keysEvent();
    if (event === "ready") heard(isObject(json) ? json.now : undefined);
  }
  // Every connection catches up (the revocations since Last-Event-ID, or all of them) before its
  // `ready`: until then what it sends keeps no view current, or a token revoked while the feed
  // was down would pass between the first event of the catch-up and its last. Then its `ready`
  // and keepalives keep it current, which carry the auth server's time; other events carry none,
  // and one held back on its way must not make a late view current again.
  const heard = (sent) => {
    if (!state.catchingUp) touch(sent);
  };

  async function connect() {
    state.catchingUp = true;
    state.timed = false;
    state.lagWarned = false;
    const c = (controller = new AbortController());
    const headers = { authorization: `Bearer ${token}`, accept: "text/event-stream" };
    if (state.lastEventId !== null) headers["last-event-id"] = state.lastEventId;
    // The server writes at least a keepalive every 15 s: three missed, and the connection is
    // taken for dead (a NAT or load balancer that dropped it without a word), as the Rust
    // feed does; not at fetch's own body timeout, minutes later.
    let idle;
    const quiet = () => {
      clearTimeout(idle);
      idle = setTimeout(() => c.abort(new Error(`nothing heard for ${FEED_IDLE_MS / 1000} s`)), FEED_IDLE_MS);
      idle.unref?.();
    };
    quiet();
    try {
      // A redirect is no answer: the service token and the feed stay on the auth server's origin.
      const res = await doFetch(endpoint, { headers, signal: c.signal, redirect: "manual" });
      if (!res.ok || !res.body) throw new Error(`revocation feed: ${res.status}`);
      state.connected = true;
      state.failing = false;
      const decoder = new TextDecoder();
      let buf = "";
      let event = "message";
      let data = [];
      let dataChars = 0;
      let id;
      for await (const chunk of res.body) {
        quiet();
        buf += decoder.decode(chunk, { stream: true });
        let nl;
        while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
          // A CR that ends the chunk may be the first half of a CRLF: the next chunk says.
          if (nl === buf.length - 1 && buf[nl] === "\r") break;
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + (buf.startsWith("\r\n", nl) ? 2 : 1));
          if (line === "") {
            if (data.length > 0 || event !== "message") dispatch(event, data.join("\n"), id);
            event = "message";
            data = [];
            dataChars = 0;
            id = undefined;
          } else if (line.startsWith(":")) {
            // `: keepalive <unix s>` (a comment: `: keepalive` from an older server)
            const m = /^: ?keepalive ([0-9]{1,15})$/.exec(line);
            if (m) heard(Number(m[1]));
            else if (!state.timed) heard(undefined);
          } else {
            const colon = line.indexOf(":");
            const field = colon < 0 ? line : line.slice(0, colon);
            let value = colon < 0 ? "" : line.slice(colon + 1);
            if (value.startsWith(" ")) value = value.slice(1);
            if (field === "event") event = value;
            else if (field === "data") {
              data.push(value);
              // Each line counts, an empty one too: endless `data:` lines are an event that
              // never ends, held as an array that never stops growing.
              dataChars += value.length + 1;
              if (dataChars > MAX_EVENT_CHARS) throw new Error("an event over 64 KiB");
            }
            // An id the server could have sent (`<n>.<tag>`, or `<n>` from an older one): any
            // other would be sent back as Last-Event-ID at every reconnect, each refused.
            else if (field === "id" && /^[0-9]{1,19}(\.[A-Za-z0-9_-]{1,32})?$/.test(value)) id = value;
          }
        }
        // As the crate: what is left unparsed (a line not yet ended) over 64 KiB is no feed's
        // (its events are under 200 bytes; a catch-up is many whole ones): reconnect rather
        // than hold it.
        if (buf.length > MAX_EVENT_CHARS) throw new Error("an event over 64 KiB");
      }
    } catch (e) {
      // Logged once per outage, not at every retry.
      if (!closed && e?.name !== "AbortError" && !state.failing) console.warn(`tokenwarden/verify: revocation feed: ${e?.message ?? e}; retrying`);
      state.failing = true;
    } finally {
      clearTimeout(idle);
      state.connected = false;
    }
    if (closed) return;
    timer = setTimeout(connect, backoff);
    timer.unref?.();
    backoff = Math.min(backoff * 2, 5000);
  }
  connect();

  return {
    ...base,
    fresh,
    warnStale() {
      if (!state.warned) {
        state.warned = true;
        console.warn("tokenwarden/verify: the revocation feed is stale; accepting tokens (onStale: accept)");
      }
    },
    status: () => ({ connected: state.connected, lastEventId: state.lastEventId, staleForMs: staleFor() }),
    close() {
      closed = true;
      clearTimeout(timer);
      clearTimeout(keys.timer);
      clearTimeout(keys.again);
      controller?.abort();
    },
  };
}
