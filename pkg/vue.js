// tokenwarden/vue (types and docs: vue.d.ts). Touches nothing but the `auth` it is given: safe
// to import while rendering on the server.
import { inject, readonly, shallowRef } from "vue";

const KEY = Symbol("tokenwarden");
const none = () => Promise.reject(Error("tokenwarden: no TokenManager"));

const sessions = new WeakMap();

export const createTokenwarden = (auth) => ({
  install: (app) => app.provide(KEY, (auth && sessions.get(auth)) || session(auth)),
});

// One set of refs per manager, and one restore(), at the first install.
function session(auth) {
  const r = {}, s = { login: none, logout: none, fetch: none };
  for (const k of ["isLoading", "isAuthenticated", "claims", "expiresAt", "endReason", "error"]) {
    s[k] = readonly((r[k] = shallowRef(k[1] == "s" ? k == "isLoading" : null)));
  }
  const read = (o) => {
    o = { ...o, isAuthenticated: auth.isAuthenticated, claims: auth.claims(), expiresAt: auth.expiresAt };
    for (const k in o) r[k].value = o[k];
  };
  if (auth) {
    // (tokenReused comes with a sessionExpired.)
    for (const e of ["login", "refresh", "sessionExpired", "logout"]) {
      auth.on(e, (d) => read({ endReason: e == "logout" ? e : d.reason || r.endReason.value }));
    }
    s.login = (c) => auth.login(c);
    s.logout = () => auth.logout();
    s.fetch = (i, o) => auth.fetch(i, o);
    auth.restore().then(() => ({}), (error) => ({ error })).then((o) => read({ ...o, isLoading: false }));
    sessions.set(auth, s);
  }
  return s;
}

export function useAuth() {
  const s = inject(KEY, null);
  if (!s) throw Error("useAuth() needs app.use(createTokenwarden(auth))");
  return s;
}
