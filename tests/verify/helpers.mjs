// The real auth server (target/debug/tokenwarden-server, built with --features test-hooks) and
// a DPoP client made with node:crypto, for the tests of tokenwarden/verify.
import { createHash, generateKeyPairSync, randomBytes, randomUUID, sign } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { freePort, serverBinary, startServer, stopServer } from "../server-process.mjs";

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const HOOKS_SECRET = "tokenwarden-test-hooks-secret";
export const NONCE_SECRET = "verify-tests-nonce-secret-0123456789abcdef";
export const FEED_TOKEN = "verify-tests-feed-token-0123456789abcdefghij";

export { freePort };

/** A tokenwarden-server on 127.0.0.1 with test hooks, a shared nonce secret and the feed. */
export class AuthServer {
  constructor({ extra = [] } = {}) {
    this.extra = extra;
    this.dir = mkdtempSync(path.join(os.tmpdir(), "tw-verify-"));
    this.feedFile = path.join(this.dir, "feed-token");
    writeFileSync(this.feedFile, FEED_TOKEN);
  }

  async start() {
    this.port ??= await freePort();
    this.base = `http://127.0.0.1:${this.port}`;
    const args = [
      "--bind", `127.0.0.1:${this.port}`, "--test-hooks", "--test-hooks-secret", HOOKS_SECRET,
      "--database-url", `sqlite://${path.join(this.dir, "tw.db")}`, "--dpop-nonce-secret", NONCE_SECRET,
      "--revocation-feed-token-file", this.feedFile, "--login-ip-per-minute", "100000",
      ...this.extra,
    ];
    this.kek ??= randomBytes(32).toString("base64");
    this.proc = await startServer(serverBinary(), args, { TW_KEY_ENCRYPTION_KEY: this.kek },
      async () => (await fetch(`${this.base}/healthz`)).status === 200);
    return this;
  }

  stop() {
    return stopServer(this.proc);
  }

  async close() {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }

  async hook(method, p, body) {
    const res = await fetch(`${this.base}${p}`, {
      method,
      headers: { "x-test-hooks-secret": HOOKS_SECRET, ...(body ? { "content-type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    if (res.status >= 300) throw new Error(`${method} ${p}: ${res.status} ${await res.text()}`);
    return res.status === 204 ? null : res.json();
  }
}

const b64 = (x) => Buffer.from(x).toString("base64url");

/** A browser-like DPoP client: one P-256 key, the newest DPoP-Nonce per origin. */
export class DpopClient {
  constructor() {
    const { publicKey, privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    this.privateKey = privateKey;
    const { kty, crv, x, y } = publicKey.export({ format: "jwk" });
    this.jwk = { kty, crv, x, y };
    this.jkt = b64(createHash("sha256").update(`{"crv":"P-256","kty":"EC","x":"${x}","y":"${y}"}`).digest());
    this.nonces = new Map();
    this.cookies = new Map();
  }

  proof(method, url, { token, nonce, iat = Math.floor(Date.now() / 1000) } = {}) {
    const u = new URL(url);
    const claims = { jti: randomUUID(), htm: method, htu: `${u.origin}${u.pathname}`, iat };
    if (token) claims.ath = b64(createHash("sha256").update(token).digest());
    if (nonce) claims.nonce = nonce;
    const input = `${b64(JSON.stringify({ typ: "dpop+jwt", alg: "ES256", jwk: this.jwk }))}.${b64(JSON.stringify(claims))}`;
    const sig = sign("sha256", Buffer.from(input), { key: this.privateKey, dsaEncoding: "ieee-p1363" });
    return `${input}.${b64(sig)}`;
  }

  /** A request with a proof (and the token as DPoP); retried once on use_dpop_nonce. */
  async fetch(method, url, { token, body, headers = {}, nonce, retry = true } = {}) {
    const origin = new URL(url).origin;
    const h = { ...headers, dpop: this.proof(method, url, { token, nonce: nonce ?? this.nonces.get(origin) }) };
    if (token) h.authorization = `DPoP ${token}`;
    if (body !== undefined) h["content-type"] = "application/json";
    if (this.cookies.size) h.cookie = [...this.cookies].map(([k, v]) => `${k}=${v}`).join("; ");
    const res = await fetch(url, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
    const n = res.headers.get("dpop-nonce");
    if (n) this.nonces.set(origin, n);
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(";");
      const eq = pair.indexOf("=");
      this.cookies.set(pair.slice(0, eq), pair.slice(eq + 1));
    }
    const text = await res.text();
    let json = null;
    try {
      json = JSON.parse(text);
    } catch {}
    if (retry && json?.error === "use_dpop_nonce" && n) return this.fetch(method, url, { token, body, headers, retry: false });
    return { status: res.status, headers: res.headers, json, text };
  }

  /** Signs up (test hook) and logs in bound to this key: the access token. */
  async login(server, email = `u-${randomUUID()}@example.com`) {
    const password = "correct horse battery staple";
    await server.hook("POST", "/test/users", { email, password, name: "Verify Test" });
    const res = await this.fetch("POST", `${server.base}/auth/login`, { body: { email, password } });
    if (res.status !== 200 || res.json.token_type !== "DPoP") throw new Error(`login: ${res.status} ${res.text}`);
    this.token = res.json.access_token;
    return this.token;
  }
}
