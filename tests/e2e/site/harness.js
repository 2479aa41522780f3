import init, { TokenManager } from "/pkg/tokenwarden.js";
import { serve } from "/bridge.js";
const ready = init();
window.setup = async (options) => {
  await ready;
  window.events = [];
  window.auth = new TokenManager(options ?? {});
  for (const e of ["login", "refresh", "sessionExpired", "tokenReused", "logout"]) {
    auth.on(e, () => events.push(e));
  }
  return true;
};
// n concurrent auth.fetch calls; resolves to their statuses (or error names).
window.burst = (n, path = "/api/me") =>
  Promise.all(Array.from({ length: n }, () =>
    auth.fetch(path).then((r) => r.status, (e) => e.name)));
// The hooks' secret: set by Playwright (addInitScript); the WebDriver scenarios use the default.
window.TW_TEST_HOOKS_SECRET ??= "tokenwarden-test-hooks-secret";
window.echo = () =>
  auth.fetch("/test/echo", { headers: { "x-test-hooks-secret": window.TW_TEST_HOOKS_SECRET } })
    .then((r) => r.json());

// ---- for the WebDriver scenarios (tests/engines/) ---------------------------------------------
// A WebDriver script cannot simply call the functions above in every engine: in Firefox it
// runs in a sandbox where `globalThis !== window` and the package's fetch fails. So the script
// and the page talk through the DOM, which both see: the script writes a call into an
// attribute and fires `tw:call`; the page answers into another attribute and fires `tw:reply`.
// The page's CSP forbids inline script, so only these named calls exist, no eval.
let pending = null;
const calls = {
  setup: (options) => window.setup(options),
  login: (credentials) => auth.login(credentials),
  restore: () => auth.restore(),
  logout: () => auth.logout(),
  refresh: (force) => auth.refresh({ force }),
  burst: (n) => window.burst(n),
  // A burst that starts at `at` (Date.now() milliseconds): the WebDriver client drives one tab
  // at a time, so it schedules every tab's burst for one moment, then collects them.
  burstAt(n, at) {
    pending = new Promise((r) => setTimeout(r, Math.max(0, at - Date.now()))).then(() => {
      const start = performance.now();
      return Promise.all(Array.from({ length: n }, () =>
        auth.fetch("/api/me").then(
          (r) => [r.status, performance.now() - start],
          (e) => [e.name, performance.now() - start])));
    });
    return true;
  },
  collect: () => pending,
  echo: () => window.echo(),
  // auth.fetch of an allowed (same-origin) URL that the server redirects to `to`.
  redirected: (to) =>
    auth.fetch("/test/redirect?to=" + encodeURIComponent(to), {
      headers: { "x-test-hooks-secret": window.TW_TEST_HOOKS_SECRET },
    }).then((r) => r.json()),
  state: () => ({
    isAuthenticated: auth.isAuthenticated,
    events: window.events,
    visibility: document.visibilityState,
  }),
  storage: async () => ({
    local: localStorage.length,
    session: sessionStorage.length,
    cookie: document.cookie,
    idb: await idbContents(),
  }),
  // The key store deleted, as Safari's eviction of script-written storage or "clear site
  // data" for storage only would: the cookies stay. (This page's connection is closed by the
  // driver when asked, as any other tab's would be.)
  dropKeys: () => new Promise((ok, no) => {
    const r = indexedDB.deleteDatabase("tokenwarden");
    r.onsuccess = () => ok(true);
    r.onerror = () => no(r.error);
  }),
  locks: async () => {
    const { held, pending } = await navigator.locks.query();
    return { held: held.length, pending: pending.length };
  },
};
/** What every IndexedDB database holds, described: a CryptoKey as "<type> <extractable|
 * non-extractable> <algorithm> key", a string shaped like a JWT as "TOKEN"; other values are
 * not listed. */
async function idbContents() {
  if (!indexedDB.databases) return "n/a";
  const req = (r) => new Promise((ok, no) => { r.onsuccess = () => ok(r.result); r.onerror = () => no(r.error); });
  const found = [];
  const walk = (v) => {
    if (v instanceof CryptoKey) found.push(`${v.type} ${v.extractable ? "extractable" : "non-extractable"} ${v.algorithm.name} key`);
    else if (typeof v === "string" && /^[\w-]+\.[\w-]+\.[\w-]*$/.test(v)) found.push("TOKEN");
    else if (v && typeof v === "object") Object.values(v).forEach(walk);
  };
  for (const { name } of await indexedDB.databases()) {
    const db = await req(indexedDB.open(name));
    for (const store of db.objectStoreNames) {
      (await req(db.transaction(store).objectStore(store).getAll())).forEach(walk);
    }
    db.close();
  }
  return found;
}
serve(calls);
