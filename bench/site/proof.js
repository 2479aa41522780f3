// Section 9: what producing one request with a DPoP proof costs in the page, the network aside,
// for tokenwarden and for oauth4webapi, with the same access token and the same URL; with
// `?es256`, ECDSA P-256 keys for all (tokenwarden's fallback: its `generateKey` refuses Ed25519
// on this page) and auth0-spa-js's DPoP fetcher beside them, whose keys are ES256 only.
//
// `fetch` is replaced before anything takes it (tokenwarden's driver takes `fetch` when a
// TokenManager is constructed; oauth4webapi gets it as its customFetch): once `stub.on`,
// GET .../api/me answers at once with an empty 200, and every other request (the login, a
// refresh if one were due) goes to the real server.
const realFetch = globalThis.fetch;
const stub = { on: false, hits: 0, last: null, headers: undefined };
globalThis.fetch = (input, init) => {
  if (stub.on && typeof input === "string" && input.endsWith("/api/me")) {
    stub.hits++;
    stub.last = init;
    return Promise.resolve(new Response(null, { status: 200, headers: stub.headers }));
  }
  return realFetch(input, init);
};
const noop = globalThis.fetch;

const es256Only = location.search === "?es256";
if (es256Only) {
  // Before the driver captures it: a browser without Ed25519, as far as tokenwarden can tell.
  const generate = SubtleCrypto.prototype.generateKey;
  SubtleCrypto.prototype.generateKey = function (alg, ...rest) {
    if (alg?.name === "Ed25519") return Promise.reject(new DOMException("no Ed25519", "NotSupportedError"));
    return Reflect.apply(generate, this, [alg, ...rest]);
  };
}
const { default: init, TokenManager } = await import("/pkg/tokenwarden.js");
const oauth = await import("/dist/oauth4webapi.js");
const auth0 = es256Only ? await import("/dist/auth0.js") : null;
await init();
const auth = new TokenManager(); // dpop: true (the default)
const url = new URL("/api/me", location.href).href;
const ES256 = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
const ED25519 = { name: "Ed25519" };
const encode = (s) => new TextEncoder().encode(s);
const unb64u = (s) => atob(s.replace(/-/g, "+").replace(/_/g, "/"));
const b64u = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes)))
  .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

let token;
const send = {};

/** Sends one request through `request`, and checks what reached the stub: Authorization is
 * `DPoP <token>`, and the DPoP header a proof for GET `url` bound to the token, signed by its jwk. */
async function check(name, request) {
  const fail = (why) => { throw new Error(`${name}: ${why}`); };
  const hits = stub.hits;
  const res = await request();
  if (res.status !== 200 || stub.hits !== hits + 1) fail("the request did not reach the stub");
  const headers = new Headers(stub.last.headers);
  if (headers.get("authorization") !== `DPoP ${token}`) fail(`Authorization: ${headers.get("authorization")}`);
  const proof = headers.get("dpop") ?? fail("no DPoP header");
  const [h, p, s] = proof.split(".");
  const header = JSON.parse(unb64u(h));
  const claims = JSON.parse(unb64u(p));
  // Ed25519 where the browser's WebCrypto has it (`EdDSA` in tokenwarden's proofs, RFC 9864's
  // `Ed25519` in oauth4webapi's), else ES256.
  const ed = header.alg === "EdDSA" || header.alg === "Ed25519";
  if (header.typ !== "dpop+jwt" || header.jwk?.kty !== (ed ? "OKP" : header.alg === "ES256" && "EC")) fail(`header ${unb64u(h)}`);
  for (const k of ["htm", "htu", "ath", "iat", "jti"]) if (claims[k] === undefined) fail(`no ${k} in ${unb64u(p)}`);
  const ath = b64u(await crypto.subtle.digest("SHA-256", encode(token)));
  if (claims.htm !== "GET" || claims.htu !== url || claims.ath !== ath) fail(`claims ${unb64u(p)}`);
  const key = await crypto.subtle.importKey("jwk", header.jwk, ed ? ED25519 : ES256, false, ["verify"]);
  const sig = Uint8Array.from(unb64u(s), (c) => c.charCodeAt(0));
  if (!(await crypto.subtle.verify(ed ? ED25519 : ES256, key, sig, encode(`${h}.${p}`)))) fail("the signature does not verify");
  return { claims: Object.keys(claims), nonce: claims.nonce, bytes: proof.length, input: `${h}.${p}`, alg: header.alg };
}

/** One request from each library, checked (outside any timing). */
window.verify = async () => ({
  tokenwarden: await check("tokenwarden", send.tokenwarden),
  oauth4webapi: await check("oauth4webapi", send.oauth4webapi),
  ...(send.auth0 && { auth0: await check("auth0-spa-js", send.auth0) }),
});

/** Logs in for real, makes one real request (the server accepts the proof), then switches
 * /api/me to the stub and sets up oauth4webapi and the bare WebCrypto floor. */
window.setup = async (email, password) => {
  await auth.login({ email, password });
  const res = await auth.fetch("/api/me");
  if (res.status !== 200) throw new Error(`GET /api/me through the server: HTTP ${res.status}`);
  token = await auth.getAccessToken();
  stub.on = true;
  send.tokenwarden = () => auth.fetch("/api/me");

  // oauth4webapi: a non-extractable private key of the same kind as tokenwarden's, a DPoP
  // handle, the same request, the same stub. allowInsecureRequests only lifts its https-only
  // check (the bench server is http://127.0.0.1).
  const { alg } = await check("tokenwarden", send.tokenwarden);
  window.proofAlg = alg;
  const keyPair = await oauth.generateKeyPair(alg);
  const options = {
    DPoP: oauth.DPoP({ client_id: "tokenwarden-bench" }, keyPair),
    [oauth.customFetch]: noop,
    [oauth.allowInsecureRequests]: true,
  };
  send.oauth4webapi = () => oauth.protectedResourceRequest(token, "GET", new URL(url), new Headers(), null, options);
  // Give it the server's current nonce the way a server response would (DPoP-Nonce), so that
  // both proofs carry the same claims.
  const { nonce } = await check("tokenwarden", send.tokenwarden);
  if (nonce) stub.headers = { "DPoP-Nonce": nonce };
  await send.oauth4webapi();

  // auth0-spa-js: its DPoP fetcher (`createFetcher`, as its docs show for calling an API), with
  // `useDpop` (an ES256 key, non-extractable, in its IndexedDB) and the same token handed over by
  // `getAccessToken`. It sends a Request to its `fetch`: the same stub's answer.
  if (auth0) {
    const client = new auth0.Auth0Client({
      domain: location.host, clientId: "tokenwarden-bench", useDpop: true,
      authorizationParams: { redirect_uri: location.href },
    });
    const fetcher = client.createFetcher({
      dpopNonceId: "bench",
      getAccessToken: async () => token,
      fetch: (req) => {
        stub.hits++;
        stub.last = { headers: req.headers };
        return Promise.resolve(new Response(null, { status: 200, headers: stub.headers }));
      },
    });
    send.auth0 = () => fetcher.fetchWithAuth(url);
    await send.auth0(); // learns the nonce (DPoP-Nonce), as oauth4webapi did
  }
  stub.headers = undefined;

  // The floor both share: SHA-256 of the token, then an ECDSA P-256 signature over an input of
  // the size tokenwarden signs, both encoded beforehand.
  const first = await window.verify();
  if (es256Only && first.tokenwarden.alg !== "ES256") throw new Error(`tokenwarden signed ${first.tokenwarden.alg}, not ES256`);
  const { privateKey } = await crypto.subtle.generateKey(ES256, false, ["sign"]);
  const tokenBytes = encode(token);
  const input = encode(first.tokenwarden.input);
  send.webcrypto = async () => {
    await crypto.subtle.digest("SHA-256", tokenBytes);
    return crypto.subtle.sign(ES256, privateKey, input);
  };
  // The same two calls with an Ed25519 key (WebCrypto has it in Chromium 137+, Firefox 129+,
  // Safari 17+): what switching the proofs' algorithm could save at most.
  try {
    const ed = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign"]);
    send.ed25519 = async () => {
      await crypto.subtle.digest("SHA-256", tokenBytes);
      return crypto.subtle.sign({ name: "Ed25519" }, ed.privateKey, input);
    };
    window.hasEd25519 = true;
  } catch {}
  return first;
};

/** `n` sequential requests (or floor iterations) of each kind, interleaved in chunks of
 * `chunk` with the order rotating chunk by chunk; the total of each kind in ms. */
window.run = async (kinds, n, chunk) => {
  const totals = Object.fromEntries(kinds.map((k) => [k, 0]));
  const hits = stub.hits;
  for (let c = 0; c * chunk < n; c++) {
    const m = Math.min(chunk, n - c * chunk);
    for (let i = 0; i < kinds.length; i++) {
      const k = kinds[(c + i) % kinds.length];
      const one = send[k];
      const t0 = performance.now();
      for (let j = 0; j < m; j++) await one();
      totals[k] += performance.now() - t0;
    }
  }
  const sent = kinds.filter((k) => k !== "webcrypto" && k !== "ed25519").length * n;
  if (stub.hits !== hits + sent) throw new Error(`${stub.hits - hits} of ${sent} requests reached the stub`);
  return totals;
};

window.ready = true;
