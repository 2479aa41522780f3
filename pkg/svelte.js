// tokenwarden/svelte (types and docs: svelte.d.ts). Touches nothing but the `auth` it is given.
import { createSubscriber } from "svelte/reactivity";

const sessions = new WeakMap();
const none = () => Promise.reject(Error("tokenwarden: no TokenManager"));
const KEYS = ["isLoading", "isAuthenticated", "claims", "expiresAt", "endReason", "error"];

// One session per manager: a store ($session) whose fields are also runes-reactive getters.
export function createAuth(auth) {
  let s = auth && sessions.get(auth);
  if (s) return s;
  const subs = new Set();
  const api = auth
    ? { login: (c) => auth.login(c), logout: () => auth.logout(), fetch: (i, o) => auth.fetch(i, o) }
    : { login: none, logout: none, fetch: none };
  let isLoading = true, endReason = null, error = null, started, offs = [], v;
  const read = () => (v = {
    isLoading, isAuthenticated: !!auth?.isAuthenticated, claims: auth?.claims() ?? null,
    expiresAt: auth?.expiresAt ?? null, endReason, error, ...api,
  });
  const update = () => (read(), subs.forEach((f) => f(v)));
  // The manager's handlers exist only while something listens; restore() at the first.
  const listen = (f) => {
    if (!subs.size && auth) {
      read();
      offs = ["login", "refresh", "sessionExpired", "logout"].map((e) =>
        auth.on(e, (d) => ((endReason = e == "logout" ? e : d.reason || endReason), update())));
      started ||= auth.restore().catch((e) => (error = e)).finally(() => ((isLoading = false), update()));
    }
    const g = (x) => f(x);
    subs.add(g);
    return () => subs.delete(g) && !subs.size && offs.forEach((off) => off());
  };
  const track = createSubscriber(listen);
  s = { ...api, subscribe: (f) => (f(read()), listen(f)) };
  for (const k of KEYS) Object.defineProperty(s, k, { get: () => (track(), (subs.size ? v : read())[k]) });
  if (auth) sessions.set(auth, s);
  return s;
}
