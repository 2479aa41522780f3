// tokenwarden's driver: carries out the commands of the wasm core (src/core/machine.rs) with
// fetch, Web Locks, BroadcastChannel and timers, and feeds the results back. It decides
// nothing: when to refresh, who waits, what to replay, what a peer's message may change and
// what to tell the app are the core's. The token lives in the core's memory; it passes through
// here only on its way into an Authorization header. See docs/SIZE.md for why this is JS.

// ---- the core: a WebAssembly module with plain exports (src/web/mod.rs) ----------------------

// ---- iface: generated from src/iface.rs (TW_BLESS=1 cargo test -p tokenwarden iface) ----
const OP_SEND = 1, OP_RETURN = 2, OP_RESOLVE = 3, OP_REJECT = 4, OP_REQUEST = 5, OP_ABORT = 6, OP_POST = 7, OP_LOCK = 8, OP_UNLOCK = 9, OP_CANCEL_LOCK = 10, OP_TIMER = 11, OP_CANCEL_TIMER = 12, OP_EMIT = 13, OP_KEY = 14;
const IN_FETCH = 1, IN_TOKEN = 2, IN_REFRESH = 3, IN_RESTORE = 4, IN_LOGIN = 5, IN_LOGOUT = 6, IN_FORGET = 7, IN_LOCK = 8, IN_TIMER = 9, IN_WAKE = 10, IN_POST = 11;
const TO_LOGIN = 0, TO_REFRESH = 1, TO_LOGOUT = 2, TO_POST = 3;
const KEY_LOAD = 0, KEY_NEW = 1, KEY_GIVEN = 2, KEY_PUT_BACK = 3, KEY_DELETE = 4, KEY_FREE = 5;
const OUT_A = 0, OUT_B = 8, OUT_ID = 16, OUT_C = 20, OUT_S = 24, OUT_T = 32;
const X_INBOX = "i", X_OUT = "o", X_NEW = "m", X_NEXT = "n", X_INPUT = "c", X_STATUS = "s", X_SEEN = "d", X_PROOF = "p", X_REPLY = "r", X_PEER = "e", X_EXPIRES_IN = "x", X_TOKEN = "t";
const EVENTS = ["login", "refresh", "sessionExpired", "tokenReused", "logout"];
const PEER_KINDS = ["ask", "token", "logout", "ended", "failed"];
const END_REASONS = ["invalid_grant", "token_reused", "expired"];
const ERROR_NAMES = ["ConfigError", "LoginError", "SessionExpiredError", "NetworkError", "RefreshError"];
const ERR_INVALID_CREDENTIALS = "invalid_credentials", ERR_TOO_MANY_ATTEMPTS = "too_many_attempts", ERR_INVALID_CODE = "invalid_code", ERR_CODE_EXPIRED = "code_expired", ERR_WEAK_PASSWORD = "weak_password", ERR_EMAIL_NOT_VERIFIED = "email_not_verified", ERR_SECOND_FACTOR_REQUIRED = "second_factor_required", ERR_STEP_UP_REQUIRED = "step_up_required", ERR_PASSKEYS_UNAVAILABLE = "passkeys_unavailable", ERR_INVALID_GRANT = "invalid_grant", ERR_TOKEN_REUSED = "token_reused", ERR_DUPLICATE_COOKIE = "duplicate_cookie", ERR_TOO_MANY_REQUESTS = "too_many_requests", ERR_CSRF_HEADER_MISSING = "csrf_header_missing", ERR_MISSING_TOKEN = "missing_token", ERR_INVALID_TOKEN = "invalid_token", ERR_INVALID_DPOP_PROOF = "invalid_dpop_proof", ERR_USE_DPOP_NONCE = "use_dpop_nonce", ERR_INVALID_REQUEST = "invalid_request", ERR_UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type", ERR_PAYLOAD_TOO_LARGE = "payload_too_large", ERR_NOT_FOUND = "not_found", ERR_METHOD_NOT_ALLOWED = "method_not_allowed", ERR_TEMPORARILY_UNAVAILABLE = "temporarily_unavailable", ERR_SERVER_ERROR = "server_error";
const CODE_NETWORK = "network", CODE_TIMEOUT = "timeout", CODE_UNEXPECTED_RESPONSE = "unexpected_response", CODE_NO_SESSION = "no_session", CODE_INVALID_OPTION = "invalid_option";
const NAME_CONFIG = "ConfigError", NAME_LOGIN = "LoginError", NAME_SESSION_EXPIRED = "SessionExpiredError", NAME_NETWORK = "NetworkError", NAME_REFRESH = "RefreshError";
const EVENT_LOGIN = "login", EVENT_REFRESH = "refresh", EVENT_SESSION_EXPIRED = "sessionExpired", EVENT_TOKEN_REUSED = "tokenReused", EVENT_LOGOUT = "logout";
const PEER_ASK = "ask", PEER_TOKEN = "token", PEER_LOGOUT = "logout", PEER_ENDED = "ended", PEER_FAILED = "failed";
const END_INVALID_GRANT = "invalid_grant", END_TOKEN_REUSED = "token_reused", END_EXPIRED = "expired";
const FED_ACCESS_DENIED = "access_denied", FED_PROVIDER_UNAVAILABLE = "provider_unavailable", FED_FEDERATION_FAILED = "federation_failed", FED_ACCOUNT_NOT_LINKED = "account_not_linked";
const COOKIE_REFRESH = "__Host-tw_refresh", COOKIE_SESSION_HINT = "tw_session", COOKIE_OIDC_FLOW = "__Host-tw_oidc", COOKIE_SIGN_UP = "__Host-tw_signup", COOKIE_KNOWN_BROWSER = "__Host-tw_device";
const OIDC_PATH = "/auth/oidc", FEDERATION_ERROR_PARAM = "tw_error", CSRF_HEADER = "X-Tokenwarden", CSRF_VALUE = "1";
// ---- end of iface ----

let mod = null; // the compiled core: each TokenManager instantiates its own
let ready = null;
const enc = new TextEncoder();
const dec = new TextDecoder();

/** Fetches and compiles the `.wasm` once (default: `tokenwarden_bg.wasm` beside this file).
 * Takes a URL, a Response, bytes, a compiled Module, or `{ module_or_path }` of any of those. */
export default function init(source) {
  return (ready ??= load(source?.module_or_path ?? source).catch((e) => {
    ready = null;
    throw e;
  }));
}

async function load(src) {
  src ??= new URL("tokenwarden_bg.wasm", import.meta.url);
  if (typeof src === "string" || src instanceof URL || src instanceof Request) src = apply(fetchAtLoad, G, [src]);
  src = await src;
  if (src instanceof Response) {
    if (!src.ok) throw new Error("tokenwarden: cannot load the .wasm: HTTP " + src.status);
    // Bytes, not compileStreaming: the same whatever the server's Content-Type.
    src = await apply(rsBytes, src, []);
  }
  mod = src instanceof WAModule ? src : await apply(waCompile, WA, [src]);
}

/** Compiles from bytes (e.g. inlined by a bundler), or takes a compiled Module, at once. */
export function initSync(source) {
  if (mod || ready) return; // the first core stays, loaded or loading: a script that imports the package cannot swap it
  const m = source?.module ?? source;
  mod = m instanceof WAModule ? m : new WAModule(m);
  ready = Promise.resolve();
}

const decodeF = TextDecoder.prototype.decode;
const decode = (b) => apply(decodeF, dec, [b]);

/** An instance of the core of its own: its exports `x` (called with the names and numbers of
 * src/iface.rs), strings in (`put`) and the current command's fields out (`out`). */
function core() {
  const x = get(waExports, new WAInstance(mod, {}));
  const OUT = x[X_OUT]();
  let buf, u8, dv;
  const mem = () => {
    if (buf !== get(memBuffer, x.memory)) {
      buf = get(memBuffer, x.memory);
      u8 = new U8(buf);
      dv = new DataView(buf);
    }
  };
  const text = (ptr, len) => (len ? decode(apply(u8Sub, u8, [ptr, ptr + len])) : "");
  const num = (f, at) => apply(f, dv, [OUT + at, true]);
  return {
    x,
    /** Writes the strings (undefined: absent) into the inbox; returns their lengths (-1:
     * absent), read by index. By index over our own records: no patched `map` or iterator
     * decides what the core is told, or how much memory it takes (all of them: at most
     * MAX_INBOX bytes, else all absent). */
    put(a, b, c) {
      const s = { __proto__: null, 0: a, 1: b, 2: c }, bytes = { __proto__: null }, lens = { __proto__: null };
      let n = 0;
      for (let i = 0; i < 3; i++) {
        if (typeof s[i] === "string") n += apply(u8Len, (bytes[i] = encode(s[i])), []);
      }
      const fits = n <= MAX_INBOX;
      let at = x[X_INBOX](fits ? n : 0);
      mem();
      for (let i = 0; i < 3; i++) {
        const e = fits && bytes[i], len = e ? apply(u8Len, e, []) : -1;
        lens[i] = len;
        if (e) (apply(u8Set, u8, [e, at]), (at += len));
      }
      return lens;
    },
    out() {
      mem();
      const u32 = (at) => num(dvU32, at);
      return {
        a: num(dvF64, OUT_A),
        b: num(dvF64, OUT_B),
        id: u32(OUT_ID),
        c: num(dvI32, OUT_C),
        s: text(u32(OUT_S), u32(OUT_S + 4)),
        t: text(u32(OUT_T), u32(OUT_T + 4)),
      };
    },
  };
}

// Captured at load: a script that patches these later never sees a token pass through them.
const G = globalThis;
const apply = Reflect.apply;
const HeadersC = Headers;
const RequestC = Request;
const URLC = URL;
const hset = Headers.prototype.set;
const hhas = Headers.prototype.has;
const hget = Headers.prototype.get;
// URL's and Request's getters too: the origin check reads the URL through these, so a script
// that redefines `URL.prototype.origin` or `Request.prototype.url` later cannot make a URL of
// another origin pass it.
const desc = Object.getOwnPropertyDescriptor;
const getters = (C, keys) => keys.map((k) => desc(C.prototype, k).get);
const [uOrigin, uHref, uPath] = getters(URL, ["origin", "href", "pathname"]);
// A Request's headers too: the token and proof are set into the object that getter gives.
const [rUrl, rHeaders, rMethod] = getters(Request, ["url", "headers", "method"]);
// The document's base URL, which relative URLs resolve against (absent outside a page).
const nBase = G.Node && desc(Node.prototype, "baseURI").get;
// A response's status and headers decide whether a request is replayed, and its URL whether
// it teaches a nonce.
const [rsStatus, rsHeaders, rsUrl, rsRedirected] = getters(Response, ["status", "headers", "url", "redirected"]);
const rClone = Request.prototype.clone;
const get = (getter, o) => apply(getter, o, []);
const parse = JSON.parse;
const ErrorC = Error;
const defProp = Object.defineProperty;
const encodeURI = encodeURIComponent;
/** Whether `re` matches `s`, by the captured `RegExp.prototype.exec`. */
const matches = (re, s) => apply(reExec, re, [s]) !== null;
const reExec = RegExp.prototype.exec;
const stringify = JSON.stringify;
const now = Date.now;
const dateParse = Date.parse;
const random = Math.random;
const setT = setTimeout;
const clearT = clearTimeout;
const U8 = Uint8Array;
// %TypedArray%'s `set` and `length`: what is written into the core's memory, and where.
const u8Set = U8.prototype.set;
const u8Len = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(U8.prototype), "length").get;
const u8Sub = U8.prototype.subarray;
// How the core's memory and the fields of its commands are read.
const memBuffer = G.WebAssembly && Object.getOwnPropertyDescriptor(WebAssembly.Memory.prototype, "buffer").get;
// The core is fetched, compiled and instantiated by what these were at load: a script that runs
// later cannot hand the driver another module's bytes, or wrap the core's exports.
const WA = G.WebAssembly, WAModule = WA?.Module, WAInstance = WA?.Instance, waCompile = WA?.compile;
const waExports = WA && desc(WAInstance.prototype, "exports")?.get;
const fetchAtLoad = G.fetch, rsBytes = G.Response?.prototype.arrayBuffer;
// BroadcastChannel's close, as it was when the first channel was made (not at load: importing
// the package touches nothing browser-only, for server rendering).
let bcClose;
const { getUint32: dvU32, getInt32: dvI32, getFloat64: dvF64 } = DataView.prototype;
// The token is encoded and hashed on its way into a DPoP proof's `ath`: these too.
const encodeF = TextEncoder.prototype.encode;
const encode = (s) => apply(encodeF, enc, [s]);
const Crypto = G.crypto;
const subtle = Crypto?.subtle;
const S = G.SubtleCrypto?.prototype ?? {};
const [sign, digest, generateKey, exportKey] = [S.sign, S.digest, S.generateKey, S.exportKey];
const randomValues = G.Crypto?.prototype.getRandomValues;
// The factory itself is looked up when used (importing the package on a server touches no
// browser global); a substitute put there later fails the captured `open`'s brand check.
const idbOpen = G.IDBFactory?.prototype.open;
// The algorithm a stored key signs with, read from the key itself (not from its record, where a
// missing member would be looked up on Object.prototype).
const keyAlg = G.CryptoKey && desc(CryptoKey.prototype, "algorithm").get;
const keyExtractable = G.CryptoKey && desc(CryptoKey.prototype, "extractable").get;
/** A stored key record if its key is one nobody can take off the page: a CryptoKey (the
 * getter's brand check) that is not extractable. Another script of the origin can write the
 * store: a key it made exportable, put there to sign the session, is no key. */
function ownKey(r) {
  try {
    if (r && !get(keyExtractable, r.k)) return r;
  } catch {}
}

const KNOWN = ["baseUrl", "loginPath", "refreshPath", "logoutPath", "allowedOrigins",
  "refreshLeewaySeconds", "csrfHeader", "autoRefresh", "sessionHintCookie",
  "refreshTimeoutMs", "crossTab", "dpop"];
/** Largest login/refresh response body read. */
const MAX_REPLY = 65536;
/** Most bytes of strings handed to the core at once (a reply's token, a peer's, a nonce). */
const MAX_INBOX = 131072;
const DONE = {};
const NONE = { __proto__: null };

/** An error of a stable `name` with its machine-readable `code`, which is also its message
 * (apps show their own words for each code). */
function fail(name, code, status, retryAfter, message = code) {
  const e = new ErrorC(message);
  own(e, "name", name);
  own(e, "code", code);
  if (status) own(e, "status", status);
  if (code === ERR_TOO_MANY_ATTEMPTS) own(e, "retryAfter", retryAfter === retryAfter ? retryAfter : undefined);
  return e;
}
/** `o[k] = v` as an own data property: no setter a script put on a prototype runs (or throws). */
function own(o, k, v) {
  defProp(o, k, { __proto__: null, value: v, writable: true, enumerable: true, configurable: true });
}
/** `c`'s string fields `keys` (and `opt` when present) as a JSON body, in snake_case. */
function json(c, keys, opt = []) {
  const b = { __proto__: null }; // no toJSON, no setter of Object.prototype sees it
  for (const k of [...keys, ...opt]) {
    const v = c?.[k];
    if (v === undefined && opt.includes(k)) continue;
    if (typeof v !== "string") throw configError(k);
    b[k.replace(/[A-Z]/g, (m) => "_" + m.toLowerCase())] = v;
  }
  return stringify(b);
}
/** A request method as fetch and XMLHttpRequest send it (the standard ones in capitals). */
function normal(m = "GET") {
  m = String(m);
  return /^(delete|get|head|options|post|put)$/i.test(m) ? m.toUpperCase() : m;
}
/** A `ConfigError` about option or argument `what`. */
function configError(what) {
  return fail(NAME_CONFIG, CODE_INVALID_OPTION, 0, 0, "bad " + what);
}
/** What a call to a freed TokenManager gets. */
const freed = () => configError("call: freed");

/** A list of our own: `{ length, 0: ..., 1: ... }` with a null prototype. */
const list = () => ({ __proto__: null, length: 0 });
const add = (l, v) => (l[l.length++] = v);

function options(o) {
  if (o != null && typeof o !== "object") throw configError("options");
  // Own options only: one a script put on Object.prototype (`dpop: false`, an origin of its
  // own) before the TokenManager was built is none of the app's.
  o = { __proto__: null, ...o };
  // Each error names the option (`bad csrfHeader`); an unknown one too.
  for (const k of Object.keys(o)) if (!KNOWN.includes(k)) throw configError(k);
  const typed = (k, type, dflt, ok = () => true) => {
    const v = o[k];
    if (v === undefined) return dflt;
    if (typeof v !== type || !ok(v)) throw configError(k);
    return v;
  };
  const url = (p, b, k) => {
    try { return new URLC(p, b); } catch { throw configError(k); }
  };
  const page = G.location?.href;
  // Required outside a page; an http(s) URL.
  const b = typed("baseUrl", "string");
  if (b === undefined && !page) throw configError("baseUrl");
  const base = url(b ?? "/", page ?? b, "baseUrl");
  if (!base.protocol.startsWith("http")) throw configError("baseUrl");
  const path = (k, d) => get(uHref, url(typed(k, "string", d), get(uHref, base), k));
  // The origins that get the token: a null-prototype list read and written by index (no
  // patched `map`, iterator or index setter of Array.prototype picks what goes in).
  const origins = list();
  const given = o.allowedOrigins;
  if (given === undefined) add(origins, get(uOrigin, base));
  else if (!Array.isArray(given)) throw configError("allowedOrigins");
  // Each origin listed (no "*"), each a URL with an origin.
  else for (let i = 0; i < given.length; i++) {
    const s = given[i], origin = typeof s === "string" && s !== "*" && get(uOrigin, url(s, s, "allowedOrigins"));
    if (!origin || origin === "null") throw configError("allowedOrigins");
    add(origins, origin);
  }
  // {name, value}, name a valid header name.
  const csrf = o.csrfHeader === undefined ? { name: CSRF_HEADER, value: CSRF_VALUE } : o.csrfHeader;
  if (typeof csrf?.name !== "string" || typeof csrf.value !== "string" ||
      !/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(csrf.name)) {
    throw configError("csrfHeader");
  }
  const hint = o.sessionHintCookie === null ? null
    : typed("sessionHintCookie", "string", COOKIE_SESSION_HINT, (s) => s !== "");
  return {
    loginUrl: path("loginPath", "/auth/login"),
    refreshUrl: path("refreshPath", "/auth/refresh"),
    logoutUrl: path("logoutPath", "/auth/logout"),
    origins,
    leeway: typed("refreshLeewaySeconds", "number", 30, (n) => n >= 0 && n < Infinity),
    autoRefresh: typed("autoRefresh", "boolean", true),
    // setTimeout fires at once for delays of 2^31 ms or more.
    timeout: typed("refreshTimeoutMs", "number", 10000, (n) => n > 0 && n <= 2147483647),
    csrf,
    hint,
    crossTab: typed("crossTab", "boolean", true),
    dpop: typed("dpop", "boolean", true),
  };
}

// ---- DPoP (RFC 9449): the key in IndexedDB, proofs signed by WebCrypto ----------------------
// The core decides what a proof says (its iat on the server's clock, the newest nonce) and
// whether a refused one is sent again; here only keys, bytes and signatures.

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
// Each character's value (a null prototype: no getter of Object.prototype sees one go by).
const B64V = { __proto__: null };
for (let i = 0; i < 64; i++) B64V[B64[i]] = i;

/** A JWT's payload (`header.payload.signature`, at most 16 KiB), decoded (never verified: the
 * server verifies) to its JSON text, or null. Unpadded base64url (padding tolerated), strict:
 * no other alphabet, no stray bits, no impossible length. By hand, reading the token by index:
 * no patchable method sees it (a script can read the claims with `claims()` anyway). */
function payloadOf(t) {
  let a = -1, b = -1, dots = 0, end;
  for (let i = 0; i < t.length; i++) if (t[i] === ".") (dots++, a = b, b = i);
  if (dots !== 2 || a < 1 || b < a + 2 || t.length > 16384) return null;
  for (end = b; t[end - 1] === "="; ) end--;
  const out = new U8(t.length);
  let acc = 0, bits = 0, n = 0;
  for (let i = a + 1; i < end; i++) {
    const v = B64V[t[i]];
    if (v === undefined) return null;
    // Six bits in; a byte out whenever eight are there.
    acc = ((acc << 6) | v) & 4095;
    bits += 6;
    if (bits >= 8) out[n++] = acc >> (bits -= 8);
  }
  // What is left must be fewer than six bits (one character of a group is impossible), zeros.
  return bits < 6 && !(acc & ((1 << bits) - 1)) ? decode(out.subarray(0, n)) : null;
}
/** `v` if it is a string of at most `max` characters, else undefined. */
const str = (v, max = Infinity) => (typeof v === "string" && v.length <= max ? v : undefined);
/** `v` if it is a number, else NaN. */
const num = (v) => (typeof v === "number" ? v : NaN);
/** A DPoP nonce or an error code: at most 512 characters, what the core's memory (which never
 * shrinks) takes from a header or a peer. */
const short = (v) => str(v, 512);

/** A JWT's `exp - iat` in seconds (never verified: the core only caps by it), or NaN. */
function lifetimeOf(token) {
  const c = claimsOf(token);
  return typeof c?.exp === "number" && typeof c.iat === "number" ? c.exp - c.iat : NaN;
}

/** A JWT's claims, decoded (never verified), as an object; null for anything else. */
function claimsOf(token) {
  try {
    const c = parse(payloadOf(token ?? "") ?? "null");
    return c && typeof c === "object" && !Array.isArray(c) ? c : null;
  } catch {
    return null;
  }
}

/** base64url without padding (by hand: no patchable String or btoa method sees a proof). */
function b64u(data) {
  const b = typeof data === "string" ? encode(data) : new U8(data);
  let s = "";
  for (let i = 0; i < b.length; i += 3) {
    const n = (b[i] << 16) | ((b[i + 1] ?? 0) << 8) | (b[i + 2] ?? 0);
    s += B64[(n >> 18) & 63] + B64[(n >> 12) & 63];
    if (i + 1 < b.length) s += B64[(n >> 6) & 63];
    if (i + 2 < b.length) s += B64[n & 63];
  }
  return s;
}

const ES256 = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
const ED25519 = { name: "Ed25519" };
const STORE = "keys";
let dbP = null;

/** The key store's database at whatever version it has (another script of the origin may
 * have raised it), with the store created if it is missing; reopened after a failure or when
 * another connection asks to change it. */
function openDb(version) {
  return new Promise((resolve, reject) => {
    const r = apply(idbOpen, G.indexedDB, version ? ["tokenwarden", version] : ["tokenwarden"]);
    r.onupgradeneeded = () => r.result.createObjectStore(STORE);
    r.onsuccess = () => {
      const db = r.result;
      db.onversionchange = () => {
        db.close();
        dbP = null;
      };
      if (db.objectStoreNames.contains(STORE)) return resolve(db);
      db.close();
      resolve(openDb(db.version + 1));
    };
    r.onerror = () => reject(r.error);
  });
}

/** One request on the key store, in its own transaction; resolves with its result. */
function keyStore(mode, op) {
  const p = (dbP ??= openDb());
  p.catch(() => { if (dbP === p) dbP = null; });
  return p.then((db) => new Promise((resolve, reject) => {
    const tx = db.transaction(STORE, mode);
    const r = op(tx.objectStore(STORE));
    tx.oncomplete = () => resolve(r?.result);
    tx.onerror = tx.onabort = () => reject(tx.error);
  }));
}

/** A new key pair: the private key cannot be exported, not even by us. Ed25519 (EdDSA proofs)
 * where WebCrypto has it: it signs faster than ES256 in every engine bench section 9 measures;
 * else ES256. Stored (as CryptoKey objects) before it is used, so a reload and the other tabs
 * sign with the same key; a redirect sign-in's under its thumbprint `t` (no `name`), beside
 * the live session's. */
async function newKey(name) {
  let a = ED25519, pair;
  try { pair = await apply(generateKey, subtle, [a, false, ["sign"]]); }
  catch { pair = await apply(generateKey, subtle, [(a = ES256), false, ["sign"]]); }
  const { kty, crv, x, y } = await apply(exportKey, subtle, ["jwk", pair.publicKey]);
  // The members RFC 7638 hashes for the thumbprint, in its order (Ed25519 has no y, which
  // stringify leaves out): the proofs' jwk too. Null prototype, and y only of an EC key: a
  // toJSON or a y on Object.prototype would put another key's thumbprint in a sign-in.
  const jwk = stringify({ __proto__: null, crv, kty, x, y: kty == "EC" ? y : undefined });
  const key = { k: pair.privateKey, at: now(), t: b64u(await apply(digest, subtle, ["SHA-256", encode(jwk)])),
    h: b64u('{"typ":"dpop+jwt","alg":"' + (a === ES256 ? "ES256" : "EdDSA") + '","jwk":' + jwk + "}") };
  await keyStore("readwrite", (s) => s.put(key, name ?? key.t));
  return key;
}


/** Whether `document.cookie` has the hint cookie; without a document a session may exist. */
function hintPresent(name) {
  const cookies = G.document?.cookie;
  if (name === null || typeof cookies !== "string") return true;
  return cookies.split(";").some((c) => {
    const i = c.indexOf("=");
    return i > 0 && c.slice(0, i).trim() === name && c.length > i + 1;
  });
}

/** The body as text, or "" if it is larger than MAX_REPLY (stops reading there). Into one
 * buffer of our own (no array a patched `push` could read a token from). */
async function readCapped(res) {
  const len = apply(hget, res.headers, ["content-length"]);
  const reader = res.body?.getReader();
  if (!reader || (len !== null && +len > MAX_REPLY)) return "";
  const all = new U8(MAX_REPLY);
  let n = 0;
  for (let r; !(r = await reader.read()).done; n += r.value.byteLength) {
    if (n + r.value.byteLength > MAX_REPLY) {
      reader.cancel().catch(() => {});
      return "";
    }
    all.set(r.value, n);
  }
  return decode(all.subarray(0, n));
}

/** A request as fetch(input, init) would make it, sendable with our header and, unless its
 * body is a one-shot stream, sendable again. A URL input goes out as fetch(url, {...init,
 * headers}) with the URL resolved exactly once; a Request is copied and cloned per send. */
class Outgoing {
  // Private: no setter or getter on Object.prototype can stand in for these.
  #spare; #headers; #init; #url; #streamed;
  method; own;
  /** `isRequest`: `input` passed Request's brand check (decided once, by `fetch`). */
  constructor(input, init, url, isRequest) {
    if (isRequest) {
      this.#spare = new RequestC(input, init);
      this.#headers = get(rHeaders, this.#spare);
      this.method = get(rMethod, this.#spare);
    } else {
      // As fetch normalizes it: these six are upper-cased, any other is sent as given.
      this.method = normal(init?.method);
      this.#headers = new HeadersC(init?.headers);
      // Null prototype: fetch reads every member of the init, and a getter of Object.prototype
      // would run with the init, and its headers, as `this`.
      this.#init = { __proto__: null, ...init, headers: this.#headers };
      this.#url = url;
      this.#streamed = init?.body instanceof ReadableStream;
    }
    this.own = apply(hhas, this.#headers, ["authorization"]);
  }
  replayable() {
    return this.#init ? !this.#streamed : !!this.#spare;
  }
  /** fetch's arguments for sending it as the caller made it (no session, or its own
   * Authorization): a Request's unsent copy, since making the copy used up the caller's
   * Request's body. */
  plain(input, init) {
    return this.#spare ? [this.#spare] : [input, init];
  }
  next(authorization, proof) {
    if (this.#init) {
      apply(hset, this.#headers, ["Authorization", authorization]);
      if (proof) apply(hset, this.#headers, ["DPoP", proof]);
      return [this.#url, this.#init];
    }
    // The copy to send next is cloned before this one gets our headers: unsent and clean, for
    // a replay or for sending it as the caller made it.
    const current = this.#spare;
    try { this.#spare = apply(rClone, current, []); } catch { this.#spare = null; }
    const h = get(rHeaders, current);
    apply(hset, h, ["Authorization", authorization]);
    if (proof) apply(hset, h, ["DPoP", proof]);
    return [current];
  }
}

/** Keeps the access token in memory, refreshes it once for all callers and all tabs, and
 * attaches it to requests for the allowed origins. */
export class TokenManager {
  /** Its core (null once freed). */
  #c = null;
  #cfg;
  #fetch;
  #ids = 0;
  /** Records by id, all null-prototype and read by name, as `#calls`: no patched Map method
   * or getter of Object.prototype sees a token, swaps the key that signs a sign-in or stops a
   * timer. */
  #waiters = { __proto__: null };
  /** Per sign-in or Post caller, by id: where its request goes and what it carries. Null
   * prototypes, read by name: no patched Map method, array iterator or getter of
   * Object.prototype decides where a request with the token goes. */
  #calls = { __proto__: null };
  #timers = { __proto__: null };
  #requests = { __proto__: null };
  #listeners = [];
  #channel = null;
  #lockName;
  #ticket = null;
  #release = null;
  #interceptor = null;
  #installed = false;
  #off = [];
  /** DPoP keys by the core's slot: { load, given, p } (null prototype: an index or name
   * missing from an array or object would be looked up on a patchable prototype). */
  #keys = { __proto__: null };
  #authOrigin;
  #servers;
  #second = null;
  #aths = null;
  #url = null;
  #mined = null;

  constructor(opts) {
    const cfg = (this.#cfg = options(opts));
    const f = G.fetch;
    if (typeof f !== "function") throw configError("environment: no fetch");
    this.#fetch = f;
    this.#lockName = "tokenwarden " + cfg.refreshUrl;
    this.#authOrigin = get(uOrigin, new URLC(cfg.refreshUrl));
    // The origins the core keeps a DPoP nonce and clock for, by place: the allowed origins
    // (the first cfg.origins.length: these get the token), then the auth endpoints'.
    const servers = (this.#servers = list());
    for (let i = 0; i < cfg.origins.length; i++) add(servers, cfg.origins[i]);
    const at = (u) => add(servers, get(uOrigin, new URLC(u)));
    at(cfg.loginUrl), at(cfg.refreshUrl), at(cfg.logoutUrl);
    if (!mod) throw configError("call: init() first");
    if (cfg.dpop && !(subtle && sign && randomValues && G.indexedDB && idbOpen)) {
      throw configError("dpop: no WebCrypto or IndexedDB");
    }
    const crossTab = cfg.crossTab && typeof BroadcastChannel === "function";
    (this.#c = core()).x[X_NEW](cfg.leeway, cfg.autoRefresh, crossTab, cfg.timeout,
      hintPresent(cfg.hint), (random() * 4294967296) >>> 0, cfg.dpop, this.#at(this.#authOrigin));
    if (crossTab) {
      bcClose ??= BroadcastChannel.prototype.close;
      this.#channel = new BroadcastChannel(this.#lockName);
      this.#channel.onmessage = (e) => this.#peer(e.data);
    }
    // A tab that slept through its token's expiry refreshes when it comes back.
    const wake = () => {
      if (G.document?.visibilityState === "hidden") return;
      this.#input(IN_WAKE);
    };
    for (const [target, type] of [[G.document, "visibilitychange"], [G, "online"], [G, "pageshow"]]) {
      if (target?.addEventListener) {
        target.addEventListener(type, wake);
        this.#off.push(() => target.removeEventListener(type, wake));
      }
    }
  }

  // ---- the API ------------------------------------------------------------------------------

  async login(c) {
    return this.#call(IN_LOGIN, false, json(c, ["email", "password"]));
  }

  /** The sign-ins by emailed code: exactly the login path, sent beside loginPath. */
  async loginWithCode(c) {
    return this.#call(IN_LOGIN, false, json(c, ["email", "code"]), "otp/verify");
  }

  async verifySignup(c) {
    return this.#call(IN_LOGIN, false, json(c, ["email", "code"]), "signup/verify");
  }

  async resetPassword(c) {
    return this.#call(IN_LOGIN, false, json(c, ["email", "code", "newPassword"]), "password/reset");
  }

  /** "Mail me a code" (no session involved): the same 202 for every address. */
  async requestCode(r) {
    await this._post("otp/start", json(r, ["email"]), 0, 1);
  }

  async signup(r) {
    await this._post("signup", json(r, ["email", "password"], ["name"]), 0, 1);
  }

  async requestPasswordReset(r) {
    await this._post("password/reset/start", json(r, ["email"]), 0, 1);
  }

  /** Signed in: with the token and a proof (one refresh and replay after a 401). */
  async changePassword(c) {
    await this._post("password/change", json(c, ["currentPassword", "newPassword"]));
  }

  /** A request (`method`, POST by default) with the JSON text `body` to `path` (beside
   * loginPath), with cookies and the CSRF header, through the core as a sign-in's is (its
   * timeout, its wording of a refusal): signed with the session's token and proof (one
   * refresh and replay after a 401) — the auth server is where the token comes from, allowed
   * origin or not —, or `plain` (no session involved). Resolves with the answer's JSON ({}
   * without one) for any 2xx. Also tokenwarden/passkeys' way to the server. */
  async _post(path, body, method, plain) {
    return this.#call(IN_POST, !plain, body, this.#beside(path), 0, method || "POST");
  }

  /** For tokenwarden/passkeys: a sign-in with the JSON text `body` at `path` (beside
   * loginPath), exactly as login(); with `ceremony`, by the key of the password sign-in that
   * was asked for a second factor (only the key that sent the password can complete it). */
  async _signIn(body, path, ceremony) {
    const second = this.#second, key = ceremony && second?.c === ceremony && second.k;
    return this.#call(IN_LOGIN, !!key, body, this.#beside(path), key);
  }

  /** `path` resolved beside loginPath, on the auth server's origin only: these hooks are
   * callable by any script of the page, which could name another origin to have the token
   * and a proof sent there. */
  #beside(path) {
    const login = this.#cfg.loginUrl, u = new URLC(path, login);
    if (get(uOrigin, u) !== get(uOrigin, new URLC(login))) throw configError("path");
    return get(uHref, u);
  }

  /** Sign-in with an OpenID Connect provider: a new key, kept beside the live session's (this
   * tab's sessionStorage names it) until restore() on the page the provider's answer returns
   * to takes the new session up. Never resolves: the page goes away (rejects with a
   * NetworkError `timeout` if the key store does not answer within refreshTimeoutMs). */
  async loginWithRedirect(o) {
    const loc = G.location, { provider: p, returnTo: r = loc?.pathname + loc?.search, maxAge: m } = o ?? {};
    // returnTo: a path of this origin (never `//host` or `/\host`), printable ASCII but `#`
    // and `\`, up to 512 characters: what the server takes.
    if (typeof p != "string" || typeof r != "string" || !matches(/^[a-z0-9-]{1,32} \/(?!\/)[!"$-[\]-~]{0,511}$/, p + " " + r)) {
      throw configError("provider or returnTo");
    }
    let t = "", q = "/start?return_to=" + encodeURI(r);
    // maxAge: whole seconds up to a day, passed on to the provider (0: sign in there again).
    if (m !== undefined) {
      if (!(typeof m == "number" && m >= 0 && m <= 86400 && m % 1 == 0)) throw configError("maxAge");
      q += "&max_age=" + m;
    }
    if (this.#cfg.dpop) q += "&dpop_jkt=" + (t = (await this.#timed(newKey())).t);
    G.sessionStorage.setItem(this.#lockName, t);
    loc.assign(this.#authOrigin + OIDC_PATH + "/" + p + q);
    return new Promise(() => {});
  }

  async restore() {
    const cfg = this.#cfg, name = this.#lockName, loc = G.location, s = loc?.search ?? "";
    // Its key's thumbprint ("" without DPoP), from loginWithRedirect.
    let t = null, ok, key;
    try { t = G.sessionStorage.getItem(name); } catch {}
    // This tab's redirect sign-in came back: as `tw_error=code` when it did not sign in. (Only
    // if this tab started one: a link to the app with a tw_error is no refusal.)
    const m = t !== null && /([?&])tw_error=([^&]*)&?/.exec(s);
    // The error leaves the address, the rest of it as it was.
    if (m) G.history.replaceState(G.history.state, "", loc.pathname + s.replace(m[0], m[1]).replace(/[?&]$/, "") + loc.hash);
    else if (t !== null && (!cfg.dpop || (t && (await (key = this.#timed(keyStore("readonly", (s) => s.get(t)).then(ownKey))))))) {
      // It may have signed in: the session's first refresh, as a login with that key. Refused
      // (given up at the provider: the cookie is another session's, or none), the page loads
      // as usual; anything else leaves the sign-in to the next restore().
      ok = await this.#call(IN_LOGIN, !!key, undefined, cfg.refreshUrl, key).then(() => true, (e) => {
        if (e.name !== NAME_LOGIN || e.status === 429) throw e;
      });
    }
    if (t !== null) {
      G.sessionStorage.removeItem(name);
      if (t) keyStore("readwrite", (s) => s.delete(t)).catch(() => {});
    }
    if (m) throw fail(NAME_LOGIN, /^[a-z_]{1,64}$/.test(m[2]) ? m[2] : FED_FEDERATION_FAILED);
    if (ok) return ok;
    let hint = hintPresent(cfg.hint);
    // No key stored (evicted with the site's storage, cleared) while the cookies live on: their
    // session is bound to a key nobody has, and no refresh could succeed. Not logged in, with no
    // request. (A key store that cannot be read: the refresh finds out.)
    if (hint && cfg.dpop && !(await this.#stored().catch(() => 1))) hint = false;
    ok = await this.#call(IN_RESTORE, hint);
    // Not logged in although the hint said a session may exist: it goes, so that later pages do
    // not try again (the server clears it itself when it ends a session; not when only the key
    // is gone).
    if (!ok && cfg.hint && hintPresent(cfg.hint)) {
      G.document.cookie = cfg.hint + "=;Path=/;Max-Age=0;Secure";
    }
    return ok;
  }

  getAccessToken() {
    return this.#call(IN_TOKEN, false);
  }

  refresh(o) {
    return this.#call(IN_REFRESH, o?.force === true);
  }

  logout() {
    return this.#call(IN_LOGOUT, false);
  }

  claims() {
    const c = this.#c;
    return c?.x[X_TOKEN]() ? claimsOf(c.out().s) : null;
  }

  get isAuthenticated() {
    return this.expiresAt !== null;
  }

  get expiresAt() {
    const t = now();
    const left = this.#c?.x[X_EXPIRES_IN](t) ?? NaN;
    return left === left ? t + left : null;
  }

  on(event, handler) {
    if (!EVENTS.includes(event)) throw configError("event");
    if (typeof handler !== "function") throw configError("handler");
    const entry = [event, handler];
    this.#listeners.push(entry);
    return () => {
      this.#listeners = this.#listeners.filter((e) => e !== entry);
    };
  }

  fetch(input, init) {
    let isRequest = false, s;
    // A Request by its brand (not `instanceof`, which a script can answer), its URL read once.
    // A string is none (and spares the brand check's TypeError, the most costly step here).
    if (typeof input !== "string") try { s = get(rUrl, input); isRequest = true; } catch {}
    const u = this.#mine(isRequest ? s : input);
    // Another origin, or no URL (fetch throws its own TypeError): untouched.
    return u ? this.#authFetch(input, init, u, isRequest) : apply(this.#fetch, G, [input, init]);
  }

  /** The headers one request of `method` to `url` needs (XMLHttpRequest, HttpClient, ...),
   * after the checks auth.fetch makes: none for another origin or without a session. `retry`
   * takes the response (its `status` and `headers.get`): for a 401 that a refresh (one for all
   * callers) or a new proof can fix, the headers for its one replay; otherwise null. Once. */
  async authorize(method, url) {
    const u = this.#mine(url), m = normal(method);
    let id = ++this.#ids, used = 0, t = u && (await this.#step(id));
    const headers = async (t) => {
      this.#input(IN_FORGET, id);
      if (!t || t === DONE) return null;
      const h = await this.#sign(t, m, u);
      return h[1] ? { Authorization: h[0], DPoP: h[1] } : { Authorization: h[0] };
    };
    return {
      headers: (await headers(t)) ?? {},
      // Where the headers are for (an allowed origin's URL, resolved once): send it there.
      url: u,
      retry: async (res) => {
        // Once, whatever the status: never a loop.
        if (used++ || !t || res?.status !== 401) return null;
        const h = (n) => res.headers?.get(n) ?? null;
        this.#saw(u, h("dpop-nonce"), h("date"));
        const s = await this.#step((id = ++this.#ids));
        // Refreshed meanwhile (or ended): that token, else the core's verdict on this 401.
        return headers(s?.[0] !== t[0] ? s : await this.#status(id, 401, true, h("www-authenticate")));
      },
    };
  }

  /** `url` as fetch resolves it (against the document's base URL, which an injected <base>
   * changes), if it is of an allowed origin (the first of the servers): the absolute URL the
   * request then goes to. */
  #mine(url) {
    try {
      const d = G.document, s = String(url), base = d && nBase ? get(nBase, d) : G.location?.href;
      // The last answer again for the same URL and base (a parse less per request).
      const m = this.#mined;
      if (m?.[0] === s && m[1] === base) return m[2];
      const u = new URLC(s, base), i = this.#at(get(uOrigin, u));
      this.#mined = [s, base, i >= 0 && i < this.#cfg.origins.length ? get(uHref, u) : undefined];
      return this.#mined[2];
    } catch {}
  }

  /** Caller `id`'s token for a request (null: no session). */
  #step(id) {
    return this.#wait(id, () => this.#input(IN_FETCH, id));
  }

  /** The Authorization value and DPoP proof (without DPoP: "") for `method url` with token `t`
   * (and the key in `slot`). */
  async #sign(step, method, url) {
    const t = step[0], proof = this.#cfg.dpop ? await this.#proof(this.#key(step[1]), method, url, t) : "";
    return [(proof ? "DPoP " : "Bearer ") + t, proof];
  }

  /** Tells the core the status caller `id`'s request got, with the `error` of its DPoP
   * challenge (the first `error="..."` after a `DPoP`, any case); resolves with its next step:
   * a token to send it again with, or DONE. */
  #status(id, status, replayable, challenge) {
    const e = short(typeof challenge == "string" && apply(reExec, /dpop[^]*?error="([^"]*)"/i, [challenge])?.[1]);
    // No DPoP `error` (every answer but a 401 that names one): nothing to write into the inbox.
    // (Freed: #wait rejects.)
    const l = e === undefined || !this.#c ? -1 : this.#c.put(e)[0];
    return this.#wait(id, () => this.#c.x[X_STATUS](id, status, replayable, l, now()));
  }

  /** The place of `origin` in the servers' list (-1: none). A plain loop over our own array:
   * no Array.prototype method a script could patch decides which origin gets the token. */
  #at(origin) {
    const list = this.#servers;
    for (let i = 0; i < list.length; i++) if (list[i] === origin) return i;
    return -1;
  }

  install() {
    if (!this.#c) return; // freed
    if (!this.#interceptor) {
      // After uninstall() a wrapper another library put around ours still works: it passes through.
      this.#interceptor = (input, init) =>
        this.#installed ? this.fetch(input, init) : apply(this.#fetch, G, [input, init]);
    }
    this.#installed = true;
    G.fetch = this.#interceptor;
  }

  uninstall() {
    this.#installed = false;
    if (G.fetch === this.#interceptor) G.fetch = this.#fetch;
  }

  /** Stops timers, listeners and the channel, and frees the core. Every call still waiting,
   * and every later one that needs the session, rejects with a `ConfigError` (`bad call:
   * freed`): none hangs. A request already sent resolves with its answer; a `fetch` to
   * another origin passes through as ever; `install()` does nothing. */
  free() {
    if (!this.#c) return;
    this.#c = null;
    for (const id in this.#waiters) this.#settle(id, freed(), 1);
    for (const t in this.#timers) clearT(this.#timers[t]);
    // Each step on its own: a global a script broke (an abort or a removeEventListener that
    // throws) costs its step, not the others, and never the callers above. No array iterator
    // or push (a script may patch them); the channel is closed by the close taken when the first
    // channel was made: a freed manager hears no peer.
    const run = (step) => {
      try {
        step();
      } catch {}
    };
    run(() => this.uninstall());
    run(() => this.#channel && apply(bcClose, this.#channel, []));
    run(() => this.#cancelLock());
    run(() => this.#release?.());
    for (let i = 0; i < this.#off.length; i++) run(this.#off[i]);
    for (const r in this.#requests) run(() => this.#requests[r].abort());
  }

  [Symbol.dispose]() {
    this.free();
  }

  // ---- driving the core ----------------------------------------------------------------------

  /** A call of `kind` (a sign-in: with its JSON `body`, at `path`; `key`: the DPoP key it
   * brings, `flag` for the core then). */
  #call(kind, flag, body, path, key, method) {
    const id = ++this.#ids;
    // The answer's JSON and the key that signed it are added by #request.
    if (body || path) this.#calls[id] = { __proto__: null, body, path, key, method };
    return this.#wait(id, () => this.#input(kind, id, flag));
  }

  #wait(id, input) {
    return new Promise((resolve, reject) => {
      if (!this.#c) return reject(freed());
      this.#waiters[id] = [resolve, reject];
      input();
      this.#drain();
    });
  }

  /** Tells the core what happened (an `IN_` kind of src/iface.rs), then carries out what it
   * says; nothing once freed. */
  #input(kind, id = 0, flag = 0) {
    if (this.#c) {
      this.#c.x[X_INPUT](kind, id, flag, now());
      this.#drain();
    }
  }

  async #authFetch(input, init, url, isRequest) {
    const out = new Outgoing(input, init, url, isRequest);
    // The caller's own Authorization wins.
    if (out.own) return apply(this.#fetch, G, out.plain(input, init));
    const id = ++this.#ids;
    let step = await this.#step(id);
    for (;;) {
      if (step === null) return apply(this.#fetch, G, out.plain(input, init)); // no session
      let res;
      try {
        const h = await this.#sign(step, out.method, url);
        res = await apply(this.#fetch, G, out.next(h[0], h[1]));
      } catch (e) {
        this.#input(IN_FORGET, id);
        throw e;
      }
      // Freed meanwhile: the request went out, and its answer is the caller's.
      if (!this.#c) return res;
      this.#seen(url, res);
      // The challenge matters to the core for a 401 only: no header read on the way back of
      // every other answer.
      const status = get(rsStatus, res);
      step = await this.#status(id, status, out.replayable(),
        status === 401 ? apply(hget, get(rsHeaders, res), ["www-authenticate"]) : null);
      if (step === DONE) return res;
    }
  }

  #drain() {
    for (let op; this.#c && (op = this.#c.x[X_NEXT]()); ) {
      const c = this.#c.out();
      const id = c.id;
      // A command that throws (a global a script broke) costs that command only: its caller,
      // if it answers one, gets the error; the commands after it are carried out.
      try {
        switch (op) {
          case OP_SEND: this.#settle(id, c.a ? [c.s, c.b] : null); break;
          case OP_RETURN: this.#settle(id, DONE); break;
          case OP_RESOLVE: this.#settle(id, c.a === 2 ? c.s : c.a === 1 ? c.b === 1 : undefined); break;
          case OP_REJECT: this.#settle(id, fail(ERROR_NAMES[c.c], c.s, c.a, c.b), 1); break;
          case OP_REQUEST: this.#request(id, c.c, c.s, c.b, c.a); break;
          case OP_ABORT: this.#requests[id]?.abort(); delete this.#requests[id]; break;
          case OP_POST: this.#post(PEER_KINDS[c.c], c.t, c.a, c.b, id, c.s); break;
          case OP_LOCK: this.#lock(c.a === 1); break;
          case OP_UNLOCK: this.#unlock(); break;
          case OP_CANCEL_LOCK: this.#cancelLock(); break;
          case OP_TIMER:
            this.#timers[id] = setT(() => {
              delete this.#timers[id];
              this.#input(IN_TIMER, id);
            }, c.a);
            break;
          case OP_CANCEL_TIMER: clearT(this.#timers[id]); delete this.#timers[id]; break;
          case OP_EMIT: this.#emit(EVENTS[c.c], c.a, END_REASONS[c.b]); break;
          case OP_KEY: this.#keyOp(c.c, id, c.a); break;
        }
      } catch (e) {
        if (op === OP_SEND || op === OP_RETURN || op === OP_RESOLVE || op === OP_REJECT) this.#settle(id, e, 1);
      }
    }
  }

  #settle(id, value, rejected) {
    const w = this.#waiters[id];
    if (!w) return;
    delete this.#waiters[id];
    const { json: j, key, method: post } = this.#calls[id] ?? NONE;
    delete this.#calls[id];
    // A Post's answer: its JSON (an ordinary object again, as the app expects one).
    if (post && !rejected) value = { ...j };
    if (rejected && j) {
      // invalid_code: the tries the email's codes have left; step_up_required: how recent a
      // sign-in must be.
      if (j.attempts_left >= 0) own(value, "attemptsLeft", j.attempts_left);
      if (j.max_age >= 0) own(value, "maxAge", j.max_age);
      // second_factor_required: how to complete it, by the key that sent the password.
      if (value.code === ERR_SECOND_FACTOR_REQUIRED && typeof j.ceremony == "string") {
        own(value, "secondFactor", { ...j });
        this.#second = { __proto__: null, c: j.ceremony, k: key };
      }
    }
    w[rejected ? 1 : 0](value);
  }

  /** Request `req` to `endpoint` (for `caller`, signed by the key in `slot`). */
  async #request(req, endpoint, bearer, caller, slot) {
    const cfg = this.#cfg, entry = this.#calls[caller] ?? { __proto__: null };
    // A sign-in with a code (or a Post) goes to its own path beside loginPath.
    const { body, path, method = "POST" } = entry;
    // A string, never a URL object: fetch would turn an object into its URL by a patchable
    // toString.
    const url = path ? get(uHref, new URLC(path, cfg.loginUrl)) : [cfg.loginUrl, cfg.refreshUrl, cfg.logoutUrl][endpoint];
    const key = (entry.key = this.#key(slot)), controller = new AbortController();
    // With cookies, the CSRF header and the JSON `body`, if any.
    const headers = new HeadersC([[cfg.csrf.name, cfg.csrf.value]]);
    if (body !== undefined) apply(hset, headers, ["Content-Type", "application/json"]);
    // Never redirected: a 307 elsewhere would resend a password and take a token from there.
    const init = { __proto__: null, method, credentials: "include", headers, body, redirect: "error", signal: controller.signal };
    if (bearer) apply(hset, headers, ["Authorization", (key ? "DPoP " : "Bearer ") + bearer]);
    this.#requests[req] = controller;
    let status = 0, json, retry;
    try {
      if (key) apply(hset, headers, ["DPoP", await this.#proof(key, method, url, bearer)]);
      const res = await apply(this.#fetch, G, [url, init]);
      this.#seen(url, res);
      retry = apply(hget, get(rsHeaders, res), ["retry-after"]);
      const text = await readCapped(res);
      status = get(rsStatus, res);
      // A key the sign-in brought (KEY_GIVEN): the server took it; the stored one from here
      // on, before the other tabs hear.
      if (status === 200 && this.#keys[slot]?.given) {
        const k = await key;
        await keyStore("readwrite", (s) => s.put(k, this.#lockName));
      }
      try { json = parse(text); } catch {}
    } catch {
      status = 0;
    }
    // Timed out: the core has moved on (and aborted it).
    if (!(req in this.#requests) || !this.#c) return;
    delete this.#requests[req];
    // Its own members only: a getter on Object.prototype for a missing one (`error`) would run
    // with the reply, its token in it, as `this`.
    const j = { __proto__: null, ...(json && typeof json === "object" ? json : 0) };
    entry.json = j; // for #settle
    const token = str(j.access_token);
    const l = this.#c.put(token, str(j.token_type), str(j.error));
    this.#c.x[X_REPLY](req, status, l[0], l[1], l[2], num(j.expires_in), lifetimeOf(token),
      parseFloat(retry), now()); // NaN for no header (null) too
    this.#drain();
  }

  /** Carries out a KEY_ op of the core (src/core/keys.rs) on `slot`; `n`: the given key's
   * caller, the live slot to put back, or the time a session ended. */
  #keyOp(op, slot, n) {
    const name = this.#lockName, keys = this.#keys;
    // Reads, and changes if `change` says so, the stored key.
    const stored = (change) => keyStore("readwrite", (s) => {
      const r = s.get(name);
      r.onsuccess = () => change(r.result, s);
    }).catch(() => {});
    if (op === KEY_PUT_BACK) {
      (async () => {
        const ours = await this.#key(slot), live = await this.#key(n);
        stored((k, s) => k?.t === ours.t && s.put(live, name));
      })().catch(() => {});
    } else if (op === KEY_DELETE) stored((k, s) => k?.at <= n && s.delete(name));
    else if (op === KEY_FREE) delete keys[slot];
    else {
      keys[slot] = { __proto__: null, p: null, given: op === KEY_GIVEN, load: op === KEY_LOAD ? () => this.#stored(true)
        : op === KEY_NEW ? () => newKey(name) : async () => this.#calls[n]?.key };
      this.#key(slot);
    }
  }

  /** The key in `slot` (a promise; null: none), read or made again if that failed. */
  #key(slot) {
    const e = this.#keys[slot];
    if (e && !e.p) {
      const p = (e.p = e.load());
      p.catch(() => { if (e.p === p) e.p = null; });
    }
    return e?.p ?? null;
  }

  /** The stored key, or else a new one stored (`create`) or undefined. Another script of the
   * origin can hold the key store's transactions: given up after refreshTimeoutMs (and the next
   * use reads again). */
  #stored(create) {
    const name = this.#lockName;
    return this.#timed(keyStore("readonly", (s) => s.get(name)).then((k) => ownKey(k) ?? (create ? newKey(name) : undefined)));
  }

  /** `p`, or a NetworkError `timeout` after refreshTimeoutMs. */
  #timed(p) {
    return new Promise((resolve, reject) => {
      const timer = setT(() => reject(fail(NAME_NETWORK, CODE_TIMEOUT)), this.#cfg.timeout);
      p.then(resolve, reject).finally(() => clearT(timer));
    });
  }

  /** A DPoP proof for `htm url`, bound to `token` (ath) if there is one. */
  async #proof(keyP, htm, url, token) {
    const key = await keyP, where = this.#where(url), htu = where[2];
    if (!this.#c) throw freed();
    const iat = this.#c.x[X_PROOF](where[1], now());
    const nonce = this.#c.out().s;
    let claims = { __proto__: null, jti: b64u(apply(randomValues, Crypto, [new U8(16)])), htm, htu, iat };
    // Properties are defined in literals, never assigned: a setter on Object.prototype would
    // swallow an assigned one. Null prototype: no toJSON of Object.prototype rewrites them.
    if (nonce) claims = { __proto__: null, ...claims, nonce };
    if (token) claims = { __proto__: null, ...claims, ath: await this.#ath(token) };
    const input = key.h + "." + b64u(stringify(claims));
    // With the key's own algorithm: a P-256 key (a browser without Ed25519, or stored by a
    // version before EdDSA proofs) signs ES256.
    const alg = get(keyAlg, key.k).name === "Ed25519" ? ED25519 : ES256;
    return input + "." + b64u(await apply(sign, subtle, [alg, key.k, encode(input)]));
  }

  /** `url`'s origin, its place in the servers' list (-1: none) and its `htu` (origin and
   * path); the last URL's kept, as most requests go where the one before went. */
  #where(url) {
    if (this.#url?.[3] !== url) {
      const u = new URLC(url), origin = get(uOrigin, u);
      this.#url = [origin, this.#at(origin), origin + get(uPath, u), url];
    }
    return this.#url;
  }

  /** A proof's `ath` for `token`: its SHA-256, base64url; computed once per token (every
   * request with it needs the same one), and kept in this private field until the next. */
  #ath(token) {
    if (this.#aths?.[0] !== token) {
      this.#aths = [token, (async () => b64u(await apply(digest, subtle, ["SHA-256", encode(token)])))()];
    }
    return this.#aths[1];
  }

  /** Tells the core a response's DPoP-Nonce and Date (before its status). */
  #seen(url, res) {
    if (!this.#cfg.dpop) return; // (see #saw) without reading a header
    const h = get(rsHeaders, res);
    // A response redirected from another origin says nothing about this one.
    if (!get(rsRedirected, res) || get(uOrigin, new URLC(get(rsUrl, res))) === get(uOrigin, new URLC(url))) {
      this.#saw(url, apply(hget, h, ["dpop-nonce"]), apply(hget, h, ["date"]));
    }
  }

  /** Tells the core the DPoP-Nonce and Date headers of an answer from `url`'s origin. */
  #saw(url, nonce, date) {
    if (!this.#cfg.dpop || !this.#c) return;
    const l = this.#c.put(short(nonce));
    this.#c.x[X_SEEN](this.#where(url)[1], l[0], dateParse(date), now()); // NaN for null too
  }

  #post(kind, text, lifetime, at, id, nonce) {
    // Literals only (see #proof): no setter on Object.prototype sees the token go by.
    let m = { t: kind, at };
    if (kind === PEER_TOKEN) m = { ...m, kind: id ? EVENT_LOGIN : EVENT_REFRESH, token: text, lifetime };
    if (nonce) m = { ...m, nonce };
    if (kind === PEER_ENDED) m = { ...m, reason: END_REASONS[id] };
    if (kind === PEER_FAILED) m = { ...m, status: id };
    this.#channel?.postMessage(m);
  }

  #peer(d) {
    const c = this.#c;
    if (!c || d == null) return;
    d = { __proto__: null, ...d }; // (as a reply's: own members only)
    // A hostile script may post strings of any size: never copy more than a token can be
    // (16 KiB) into the core's memory, which does not shrink again.
    const t = str(d.token, 16384), l = c.put(t, short(d.nonce));
    // A token's lifetime, or a failure's status.
    c.x[X_PEER](PEER_KINDS.indexOf(d.t), l[0], l[1], END_REASONS.indexOf(d.reason), d.kind === EVENT_LOGIN,
      num(d.lifetime ?? d.status), lifetimeOf(t), num(d.at), now());
    this.#drain();
  }

  #lock(wait) {
    const locks = G.navigator?.locks;
    const ticket = (this.#ticket = { controller: new AbortController(), cancelled: false });
    const granted = (ok) => {
      if (!ticket.cancelled) this.#input(IN_LOCK, 0, ok);
    };
    if (typeof locks?.request !== "function") return granted(true); // no Web Locks: unlocked
    const opts = wait ? { signal: ticket.controller.signal } : { ifAvailable: true };
    locks.request(this.#lockName, opts, (lock) => {
      if (ticket.cancelled) return; // given up: released at once
      if (!lock) return granted(false);
      return new Promise((release) => {
        this.#release = release;
        granted(true);
      });
    }).catch(() => granted(true)); // refused (e.g. an opaque origin): go ahead unlocked
  }

  #unlock() {
    const release = this.#release;
    this.#release = null;
    release?.();
  }

  #cancelLock() {
    const t = this.#ticket;
    if (t) {
      t.cancelled = true;
      t.controller.abort();
    }
  }

  #emit(event, expiresIn, reason) {
    const detail = event === EVENT_REFRESH ? { expiresIn } : event === EVENT_SESSION_EXPIRED ? { reason } : {};
    for (const [e, handler] of this.#listeners) {
      if (e !== event) continue;
      try {
        handler(detail);
      } catch (err) {
        G.reportError?.(err);
      }
    }
  }
}
