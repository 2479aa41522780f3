// tokenwarden/svelte: the Svelte binding of tokenwarden (Svelte 5.7 or later).
import type { Readable } from "svelte/store";
import type { AccessTokenClaims, LoginCredentials, TokenManager, TokenwardenError } from "./tokenwarden.js";

/** Why the last session ended: a `logout` (here or in another tab), or the `reason` of the
 * `sessionExpired` event. */
export type AuthEndReason = "logout" | "invalid_grant" | "token_reused" | "expired";

/** The session's state: the store's value, a new object on login, refresh (here or in another
 * tab), logout and session end; the functions keep their identity. */
export interface AuthState {
  /** `true` until `restore()` has settled (always without a manager). */
  readonly isLoading: boolean;
  readonly isAuthenticated: boolean;
  /** The access token's payload, decoded but not verified (for display, not authorization). */
  readonly claims: AccessTokenClaims | null;
  /** When the access token expires (`Date.now()` milliseconds), or `null`. */
  readonly expiresAt: number | null;
  /** Why the last session ended while a component was listening, or `null` if none has (the
   * manager's handlers exist only then: a session that ends with nothing mounted is not seen). */
  readonly endReason: AuthEndReason | null;
  /** Why the page-load `restore()` failed, or `null`: a `LoginError` on the page a
   * `loginWithRedirect` came back to without signing in (`access_denied`, ...), a
   * `NetworkError`, or a `RefreshError` (`unexpected_response`: an answer outside the
   * protocol, the session perhaps still there). */
  readonly error: TokenwardenError | null;
  /** `auth.login` (rejects without a manager). */
  login(credentials: LoginCredentials): Promise<void>;
  /** `auth.logout`. */
  logout(): Promise<void>;
  /** `auth.fetch`: `fetch` with the token for allowed origins. */
  fetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response>;
}

/** Both a readable store (`$session.isAuthenticated`) and, in runes mode, an object whose
 * fields are reactive where they are read (`session.isAuthenticated` in a template, `$derived`
 * or `$effect`). The manager's handlers exist only while something reads it. */
export interface AuthSession extends AuthState, Readable<AuthState> {}

/** The session of `auth`: one per manager, whoever asks; `restore()` is called once, when it is
 * first subscribed to. With `null` (server-side rendering) it is logged out and loading, and
 * its functions reject. */
export function createAuth(auth: TokenManager | null | undefined): AuthSession;
