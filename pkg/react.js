"use client";
// tokenwarden/react (docs: react.d.ts). Touches nothing but the `auth` it is given.
import { createContext, createElement, useContext, useEffect, useSyncExternalStore } from "react";

const Ctx = createContext();
const stores = new WeakMap();
const none = () => Promise.reject(Error("tokenwarden: no TokenManager"));
const OUT = {
  s: {
    isLoading: true, isAuthenticated: false, claims: null, expiresAt: null, endReason: null, error: null,
    login: none, logout: none, fetch: none,
  },
  get: () => OUT.s,
  sub: () => () => {},
  start() {},
};

// One store per manager, shared by every useAuth() and every mount.
function store(auth) {
  if (!auth) return OUT;
  let st = stores.get(auth);
  if (st) return st;
  const subs = new Set();
  const api = { login: (c) => auth.login(c), logout: () => auth.logout(), fetch: (i, o) => auth.fetch(i, o) };
  let offs = [], isLoading = true, endReason = null, error = null, started;
  const read = () => (st.s = {
    isLoading, isAuthenticated: auth.isAuthenticated, claims: auth.claims(),
    expiresAt: auth.expiresAt, endReason, error, ...api,
  });
  const update = () => (read(), subs.forEach((f) => f()));
  st = {
    get: () => st.s,
    // The manager's handlers exist only while a component listens.
    sub(f) {
      if (!subs.size) {
        read();
        offs = ["login", "refresh", "sessionExpired", "logout"].map((e) =>
          auth.on(e, (d) => ((endReason = e == "logout" ? e : d.reason || endReason), update())));
      }
      subs.add(f);
      return () => subs.delete(f) && !subs.size && offs.forEach((off) => off());
    },
    // restore() once per manager, however often a provider mounts.
    start() {
      started ||= auth.restore().catch((e) => (error = e)).finally(() => ((isLoading = false), update()));
    },
  };
  read();
  stores.set(auth, st);
  return st;
}

export function TokenwardenProvider({ auth, children }) {
  useEffect(() => store(auth).start(), [auth]);
  return createElement(Ctx.Provider, { value: auth || null }, children);
}

export function useAuth() {
  const auth = useContext(Ctx);
  if (auth === undefined) throw Error("useAuth() outside <TokenwardenProvider>");
  const st = store(auth);
  return useSyncExternalStore(st.sub, st.get, OUT.get);
}
