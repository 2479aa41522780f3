// tokenwarden/react: the React binding of tokenwarden (React 18 or later).
import type { ReactElement, ReactNode } from "react";
import type { AccessTokenClaims, LoginCredentials, TokenManager, TokenwardenError } from "./tokenwarden.js";

/** Why the last session ended: a `logout` (here or in another tab), or the `reason` of the
 * `sessionExpired` event. */
export type AuthEndReason = "logout" | "invalid_grant" | "token_reused" | "expired";

/** What `useAuth()` returns. A new object when the state changes; the functions keep their
 * identity for the life of the manager. */
export interface AuthState {
  /** `true` until the provider's `restore()` has settled (always on the server). */
  isLoading: boolean;
  isAuthenticated: boolean;
  /** The access token's payload, decoded but not verified (for display, not authorization). */
  claims: AccessTokenClaims | null;
  /** When the access token expires (`Date.now()` milliseconds), or `null`. */
  expiresAt: number | null;
  /** Why the last session ended while a component was listening, or `null` if none has (the
   * manager's handlers exist only then: a session that ends with nothing mounted is not seen). */
  endReason: AuthEndReason | null;
  /** Why the page-load `restore()` failed, or `null`: a `LoginError` on the page a
   * `loginWithRedirect` came back to without signing in (`access_denied`, ...), a
   * `NetworkError`, or a `RefreshError` (`unexpected_response`: an answer outside the
   * protocol, the session perhaps still there). */
  error: TokenwardenError | null;
  /** `auth.login`. */
  login(credentials: LoginCredentials): Promise<void>;
  /** `auth.logout`. */
  logout(): Promise<void>;
  /** `auth.fetch`: `fetch` with the token for allowed origins. */
  fetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response>;
}

export interface TokenwardenProviderProps {
  /** The app's one `TokenManager` (created after `await init()`), or `null`/`undefined` where
   * there is none, e.g. during server-side rendering: then `useAuth()` is logged out and
   * its functions reject. */
  auth: TokenManager | null | undefined;
  children?: ReactNode;
}

/** Provides `auth` to `useAuth()` below it, and calls `auth.restore()` once when it first
 * mounts (once per manager: StrictMode's second mount does not refresh again). */
export function TokenwardenProvider(props: TokenwardenProviderProps): ReactElement;

/** The session state, re-rendered on login, refresh (here or in another tab), logout and
 * session end. Throws outside a `<TokenwardenProvider>`. */
export function useAuth(): AuthState;
