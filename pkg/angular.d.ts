// tokenwarden/angular: the Angular binding of tokenwarden (Angular 17 or later, standalone).
import type { EnvironmentProviders, Signal } from "@angular/core";
import type { HttpInterceptorFn } from "@angular/common/http";
import type { AccessTokenClaims, TokenManager, TokenwardenError } from "./tokenwarden.js";

/** Why the last session ended: a `logout` (here or in another tab), or the `reason` of the
 * `sessionExpired` event. */
export type AuthEndReason = "logout" | "invalid_grant" | "token_reused" | "expired";

/** What `injectAuth()` returns: the session as signals (updated on login, refresh, here or in
 * another tab, logout and session end), and the manager. */
export interface AuthSignals {
  /** `true` until `restore()` has settled (always without a manager). */
  readonly isLoading: Signal<boolean>;
  readonly isAuthenticated: Signal<boolean>;
  /** The access token's payload, decoded but not verified (for display, not authorization). */
  readonly claims: Signal<AccessTokenClaims | null>;
  /** When the access token expires (`Date.now()` milliseconds), or `null`. */
  readonly expiresAt: Signal<number | null>;
  /** Why the last session ended, or `null` if none has ended since the page loaded. */
  readonly endReason: Signal<AuthEndReason | null>;
  /** Why the page-load `restore()` failed, or `null`: a `LoginError` on the page a
   * `loginWithRedirect` came back to without signing in (`access_denied`, ...), a
   * `NetworkError`, or a `RefreshError` (`unexpected_response`: an answer outside the
   * protocol, the session perhaps still there). */
  readonly error: Signal<TokenwardenError | null>;
  /** The manager given to `provideTokenwarden` (`login`, `logout`, `fetch`, ...). */
  readonly auth: TokenManager | null | undefined;
  /** Settles when `restore()` has (at once without a manager). */
  readonly ready: Promise<void> | undefined;
}

/** Provides the app's one `TokenManager` (or `null` during server-side rendering: logged out,
 * and the interceptor passes every request as it is) and calls its `restore()` once, at once.
 * Call it once per manager, in `bootstrapApplication`'s providers. */
export function provideTokenwarden(auth: TokenManager | null | undefined): EnvironmentProviders;

/** The session signals. In an injection context, under `provideTokenwarden` (Angular's
 * NullInjectorError names it otherwise). */
export function injectAuth(): AuthSignals;

/** For `provideHttpClient(withInterceptors([tokenwardenInterceptor]))`, with the XHR or the
 * fetch backend (`withFetch()`): a request to an allowed origin gets `Authorization` (and a
 * DPoP proof for exactly its method and URL) from `auth.authorize`; a 401 gets one refresh and
 * one replay, never a loop (a second 401 is the caller's `HttpErrorResponse`). A request that
 * already carries `Authorization`, and any request to another origin, goes as it is. Errors of
 * the manager (`NetworkError`, `SessionExpiredError`) reach the caller as the observable's error. */
export const tokenwardenInterceptor: HttpInterceptorFn;

/** A `canActivate` guard: waits for `restore()`, then lets a signed-in user through; otherwise
 * returns what `denied` returns (run in the injection context, e.g.
 * `() => inject(Router).parseUrl("/login")`), or `false`. */
export function authGuard<T = false>(denied?: () => T): () => Promise<true | T | false>;
