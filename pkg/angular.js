// tokenwarden/angular (types and docs: angular.d.ts). Touches nothing but the `auth` it is given.
import { InjectionToken, Injector, inject, makeEnvironmentProviders, runInInjectionContext, signal } from "@angular/core";
import { catchError, defer, switchMap, throwError } from "rxjs";

const KEY = new InjectionToken("tokenwarden: provideTokenwarden(auth)");

export function provideTokenwarden(auth) {
  const w = {}, s = { auth };
  for (const k of ["isLoading", "isAuthenticated", "claims", "expiresAt", "endReason", "error"]) {
    s[k] = (w[k] = signal(k[1] == "s" ? k == "isLoading" : null)).asReadonly();
  }
  const read = (o) => {
    o = { ...o, isAuthenticated: auth.isAuthenticated, claims: auth.claims(), expiresAt: auth.expiresAt };
    for (const k in o) w[k].set(o[k]);
  };
  if (auth) {
    // (tokenReused comes with a sessionExpired.)
    for (const e of ["login", "refresh", "sessionExpired", "logout"]) {
      auth.on(e, (d) => read({ endReason: e == "logout" ? e : d.reason || s.endReason() }));
    }
    s.ready = auth.restore().then(() => ({}), (error) => ({ error })).then((o) => read({ ...o, isLoading: false }));
  }
  return makeEnvironmentProviders([{ provide: KEY, useValue: s }]);
}

export const injectAuth = () => inject(KEY);

// A 401 gets one refresh and one replay; other origins, no header.
export const tokenwardenInterceptor = (req, next) => {
  const auth = inject(KEY, { optional: true })?.auth;
  if (!auth || req.headers.has("Authorization")) return next(req);
  // To the URL the headers are for, resolved once.
  return defer(() => auth.authorize(req.method, req.url)).pipe(switchMap(({ headers, retry, url }) => {
    const send = (h) => next(req.clone(url ? { url, setHeaders: h } : { setHeaders: h }));
    return send(headers).pipe(catchError((e) => defer(() => retry(e)).pipe(switchMap((h) => (h ? send(h) : throwError(() => e))))));
  }));
};

export const authGuard = (denied) => async () => {
  const s = injectAuth(), i = inject(Injector);
  await s.ready;
  return s.isAuthenticated() || (denied ? runInInjectionContext(i, denied) : false);
};
