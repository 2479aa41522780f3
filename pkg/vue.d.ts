// tokenwarden/vue: the Vue binding of tokenwarden (Vue 3.3 or later).
import type { Plugin, Ref } from "vue";
import type { AccessTokenClaims, LoginCredentials, TokenManager, TokenwardenError } from "./tokenwarden.js";

/** Why the last session ended: a `logout` (here or in another tab), or the `reason` of the
 * `sessionExpired` event. */
export type AuthEndReason = "logout" | "invalid_grant" | "token_reused" | "expired";

/** What `useAuth()` returns: read-only refs, updated on login, refresh (here or in another
 * tab), logout and session end, so `const { isAuthenticated } = useAuth()` stays reactive; the
 * functions keep their identity for the life of the app. */
export interface AuthState {
  /** `true` until the plugin's `restore()` has settled (always on the server). */
  readonly isLoading: Readonly<Ref<boolean>>;
  readonly isAuthenticated: Readonly<Ref<boolean>>;
  /** The access token's payload, decoded but not verified (for display, not authorization). */
  readonly claims: Readonly<Ref<AccessTokenClaims | null>>;
  /** When the access token expires (`Date.now()` milliseconds), or `null`. */
  readonly expiresAt: Readonly<Ref<number | null>>;
  /** Why the last session ended, or `null` if none has ended since the page loaded. */
  readonly endReason: Readonly<Ref<AuthEndReason | null>>;
  /** Why the page-load `restore()` failed, or `null`: a `LoginError` on the page a
   * `loginWithRedirect` came back to without signing in (`access_denied`, ...), a
   * `NetworkError`, or a `RefreshError` (`unexpected_response`: an answer outside the
   * protocol, the session perhaps still there). */
  readonly error: Readonly<Ref<TokenwardenError | null>>;
  /** `auth.login` (rejects without a manager). */
  login(credentials: LoginCredentials): Promise<void>;
  /** `auth.logout`. */
  logout(): Promise<void>;
  /** `auth.fetch`: `fetch` with the token for allowed origins. */
  fetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response>;
}

/** `app.use(createTokenwarden(auth))`: provides the session to `useAuth()` and calls
 * `auth.restore()` once per manager (every app given the same manager shares one session).
 * With `null` (server-side rendering, where no manager exists) the session is logged out and
 * loading, and its functions reject. */
export function createTokenwarden(auth: TokenManager | null | undefined): Plugin;

/** The session, in a component's `setup` (or another `inject()` context) of an app that uses
 * the plugin; throws otherwise. */
export function useAuth(): AuthState;
