/// <reference lib="esnext.disposable" />
// Types of tokenwarden (hand-written beside src/web/tokenwarden.js).

/** Options of `new TokenManager(options)`. Every field is optional. */
export interface TokenManagerOptions {
  /** Where the auth endpoints live. Default: `location.origin`. */
  baseUrl?: string;
  /** Default `/auth/login`, resolved against `baseUrl`. */
  loginPath?: string;
  /** Default `/auth/refresh`. */
  refreshPath?: string;
  /** Default `/auth/logout`. */
  logoutPath?: string;
  /** Origins whose requests get the token (`Authorization: DPoP` + a `DPoP` proof, or
   * `Authorization: Bearer` with `dpop: false`). Default: `baseUrl`'s origin only. */
  allowedOrigins?: readonly string[];
  /** Refresh when this little lifetime is left (capped at half the lifetime). Default 30. */
  refreshLeewaySeconds?: number;
  /** Sent on every request to the auth server (sign-ins, codes, refresh, logout, passkeys).
   * Default `{ name: "X-Tokenwarden", value: "1" }`, the only one the reference server takes:
   * change it only for another backend. */
  csrfHeader?: { name: string; value: string };
  /** `false` = "banking mode": the session ends when the access token expires. Default true. */
  autoRefresh?: boolean;
  /** JS-readable cookie saying a session may exist; `null` = always try on `restore()`. Default `"tw_session"`. */
  sessionHintCookie?: string | null;
  /** Give up on one refresh attempt after this long. Default 10000. */
  refreshTimeoutMs?: number;
  /** Share refreshes, tokens and logout with the other tabs of this origin (Web Locks +
   * BroadcastChannel). Default true. */
  crossTab?: boolean;
  /** Sender-constrained tokens (DPoP, RFC 9449): a non-extractable key per login (Ed25519,
   * EdDSA proofs, where the browser's WebCrypto has it; else ECDSA P-256, ES256), kept as a
   * `CryptoKey` in IndexedDB; every login, refresh and logout request and every
   * request to an allowed origin carries a proof signed with it, so a token copied out of the
   * page is useless elsewhere. Default true; construction throws a `ConfigError` where
   * WebCrypto or IndexedDB is missing. `false` (plain Bearer tokens) is for backends without
   * DPoP only: then any script in the page can obtain a usable token. */
  dpop?: boolean;
}

export interface LoginCredentials {
  email: string;
  password: string;
}

/** `loginWithCode`'s argument: the address and the code from the message it received. */
export interface CodeCredentials {
  email: string;
  code: string;
}

/** `loginWithRedirect`'s argument. */
export interface RedirectLoginOptions {
  /** The provider's name on the auth server (`--oidc name=...`): 1 to 32 of `a-z`, `0-9`
   * and `-`. */
  provider: string;
  /** The page the provider's answer comes back to: a path of this origin, starting with one
   * `/` (not `//` or `/\`), printable ASCII without `#` or `\`, at most 512 characters.
   * Default: `location.pathname + location.search`. */
  returnTo?: string;
  /** Passed on to the provider as OpenID Connect's `max_age` (whole seconds, 0 to 86400): how
   * long ago the user may have signed in there for it not to ask again. A provider's sign-in
   * counts as recent for the actions that need one (adding or removing a passkey, the second
   * factor: `step_up_required`) only when the provider says its user signed in there during this
   * sign-in, within the server's `--step-up-max-age-secs`: `maxAge: 0` asks it to have the user
   * sign in again, and to say when. A `ConfigError` (`bad maxAge`) otherwise. */
  maxAge?: number;
}

/** Why a sign-in with an OpenID Connect provider did not sign in: the `code` of the
 * `LoginError` that `restore()` rejects with on the page it came back to. `access_denied`:
 * cancelled or refused at the provider; `provider_unavailable`: the provider could not be
 * reached; `federation_failed`: its answer did not verify (the details are in the server's
 * log); `account_not_linked`: the address it vouches for is another account's. */
export type FederationErrorCode =
  | "access_denied"
  | "provider_unavailable"
  | "federation_failed"
  | "account_not_linked";

/** The access token's payload, decoded but not verified (the server verifies). */
export interface AccessTokenClaims {
  sub?: string;
  sid?: string;
  exp?: number;
  iat?: number;
  email?: string;
  name?: string;
  roles?: string[];
  /** Whether the address was shown to be the user's. */
  email_verified?: boolean;
  /** Any claim the app owns (`users set-claims`). */
  [claim: string]: unknown;
}

export interface TokenManagerEventMap {
  login: {};
  /** `expiresIn`: seconds the new access token lives. */
  refresh: { expiresIn: number };
  sessionExpired: { reason: "invalid_grant" | "token_reused" | "expired" };
  /** The server saw the refresh token used twice (theft, or a bug) and revoked the session. */
  tokenReused: {};
  logout: {};
}
export type TokenManagerEvent = keyof TokenManagerEventMap;

export type TokenwardenErrorName =
  | "ConfigError"
  | "LoginError"
  | "SessionExpiredError"
  | "NetworkError"
  | "RefreshError";

/** Every promise of a TokenManager rejects with one of these (or with what `fetch` itself throws, e.g. an AbortError). */
export interface TokenwardenError extends Error {
  name: TokenwardenErrorName;
  /** Machine-readable: `invalid_credentials`, `invalid_code` (with `attemptsLeft`), `code_expired`, `weak_password`, `email_not_verified`, `too_many_attempts`, `invalid_grant`, `token_reused`, `expired`, `network`, `timeout`, `server_error`, `unexpected_response` (e.g. a refused DPoP proof: the session is kept), a {@link FederationErrorCode} from `restore()`, ... */
  code: string;
  /** The `code` again (for a `ConfigError`: `bad` and the option or argument at fault, e.g.
   * `bad csrfHeader`, and what the environment lacks after a colon, e.g. `bad dpop: no WebCrypto
   * or IndexedDB`); show your own words for each code. */
  message: string;
  /** HTTP status, when there was one. */
  status?: number;
  /** Seconds, for `too_many_attempts`. */
  retryAfter?: number;
  /** For `invalid_code`: tries the email's live codes have left; `0`: none is left (the
   * code that was used up has been replaced by a new one in the mail). */
  attemptsLeft?: number;
  /** For `second_factor_required` (a `login` of an account that requires a second factor):
   * how to complete the sign-in, with `tokenwarden/passkeys`' `completeSignIn`. */
  secondFactor?: SecondFactorChallenge;
}

/** The server's answer to a password sign-in that needs a second factor. */
export interface SecondFactorChallenge {
  /** Names the pending sign-in (single use, a few minutes). */
  ceremony: string;
  /** A WebAuthn challenge for the account's passkeys, when it has any. */
  passkey?: { publicKey: unknown } | null;
  /** Whether a code was emailed (the server sends codes). */
  email_code: boolean;
}

/** What {@link TokenManager.authorize} gives: the headers for one request, and its replay. */
export interface Authorization {
  /** `Authorization` and, with DPoP, a `DPoP` proof for exactly this method and URL; `{}` for
   * another origin or without a session (send the request as it is). */
  headers: Record<string, string>;
  /** The absolute URL the headers are for, `url` resolved once against the document's base URL
   * (undefined for another origin): send the request to exactly this URL, not to `url` resolved
   * again (a script could change the page's `<base>` meanwhile). */
  url?: string;
  /** Give it the response (anything with `status` and `headers.get`, e.g. a `Response`, an
   * Angular `HttpErrorResponse`, or `{ status: xhr.status, headers: { get: (n) =>
   * xhr.getResponseHeader(n) } }`). For a 401 a refresh (one for all callers and tabs) or a
   * new proof can fix, the headers for the one replay; otherwise (another status, a second
   * call, a 401 nothing can fix) `null`: hand the response to the caller. */
  retry(response: { status: number; headers?: { get(name: string): string | null } }): Promise<Record<string, string> | null>;
}

/** Fetches and compiles the `.wasm` once (by default from `tokenwarden_bg.wasm` beside this
 * module); each `new TokenManager()` then instantiates it. Call it before `new TokenManager()`. */
export default function init(
  module_or_path?: { module_or_path: RequestInfo | URL | Response | BufferSource | WebAssembly.Module } |
    RequestInfo | URL | Response | BufferSource | WebAssembly.Module,
): Promise<unknown>;

/** `init` at once, without fetching: compiles the `.wasm`'s bytes synchronously (e.g. read
 * from disk in Node, as the package's own Node tests do) or takes a compiled Module. In a
 * page, prefer `await init()`. */
export function initSync(module: { module: BufferSource | WebAssembly.Module } | BufferSource | WebAssembly.Module): void;

/** Keeps the access token in memory, refreshes it once for all callers and all tabs, and
 * attaches it to requests for the allowed origins. */
export class TokenManager {
  /** Throws a `ConfigError` for unknown options or wrong types. */
  constructor(options?: TokenManagerOptions);
  /** POSTs the credentials to `loginPath`; rejects with `LoginError` (`code`
   * `invalid_credentials` or `too_many_attempts` with `retryAfter`) or `NetworkError`. */
  login(credentials: LoginCredentials): Promise<void>;
  /** Asks the server to email a sign-in code (`POST otp/start` beside `loginPath`). Resolves
   * the same whether or not the address has an account; rejects with `LoginError`
   * (`too_many_attempts` with `retryAfter`, `invalid_request`) or `NetworkError`. */
  requestCode(request: { email: string }): Promise<void>;
  /** Signs in with an emailed code (`POST otp/verify` beside `loginPath`), exactly as `login`
   * does (a new DPoP key, the `login` event, the other tabs told); rejects with `LoginError`
   * (`invalid_code` with `attemptsLeft`, `code_expired`, `too_many_attempts` with
   * `retryAfter`) or `NetworkError`. */
  loginWithCode(credentials: CodeCredentials): Promise<void>;
  /** Signs up with a password (`POST signup` beside `loginPath`, the server started with
   * `--signup password`): resolves the same whether or not the address has an account, and
   * mails a code to it. Rejects with `LoginError` (`weak_password`, `too_many_attempts` with
   * `retryAfter`, `invalid_request`) or `NetworkError`. */
  signup(request: { email: string; password: string; name?: string }): Promise<void>;
  /** The code of a sign-up creates the account and signs it in, exactly as `login` does. In
   * the browser that called `signup` (the sign-up it sent last; elsewhere `code_expired`).
   * Rejects with `LoginError` (`invalid_code` with `attemptsLeft`, `code_expired`,
   * `too_many_attempts`) or `NetworkError`. */
  verifySignup(credentials: CodeCredentials): Promise<void>;
  /** Mails a code that resets the password (`POST password/reset/start`); resolves the same
   * for every address. Rejects with `LoginError` (`too_many_attempts`) or `NetworkError`. */
  requestPasswordReset(request: { email: string }): Promise<void>;
  /** The code and a new password: every session of the account ends (the other tabs get
   * `sessionExpired` at their next refresh) and this one is signed in, as `login` does.
   * Rejects with `LoginError` (`weak_password`, `invalid_code` with `attemptsLeft`,
   * `code_expired`, `too_many_attempts`) or `NetworkError`. */
  resetPassword(credentials: { email: string; code: string; newPassword: string }): Promise<void>;
  /** Signed in: checks the current password and sets the new one; every other session of the
   * account ends, this one goes on. Rejects with `LoginError` (`invalid_credentials`,
   * `weak_password`, `too_many_attempts`), `SessionExpiredError` or `NetworkError`. */
  changePassword(request: { currentPassword: string; newPassword: string }): Promise<void>;
  /** Signs in with an OpenID Connect provider (Google, Entra, Keycloak, ... configured on the
   * auth server): makes a new DPoP key as `login` does, kept beside the live session's until
   * the sign-in completes, and sends the page to `/auth/oidc/{provider}/start` on the auth
   * server, which sends it on to the provider. `restore()` on the page the provider's answer
   * comes back to (`returnTo`) finishes it. The promise never resolves (the page goes away);
   * it rejects with `ConfigError` for a bad `provider` or `returnTo`, and with `NetworkError`
   * (`timeout`) when the key store does not answer within `refreshTimeoutMs`. */
  loginWithRedirect(options: RedirectLoginOptions): Promise<never>;
  /** At page load: a silent refresh if a session may exist. Resolves `true` if logged in.
   * Rejects with `NetworkError` (the session may still exist), with `RefreshError`
   * (`unexpected_response`) for an answer outside the protocol (a refused proof, say: the
   * session may still exist too), and on the page a
   * `loginWithRedirect` came back to without signing in, with a `LoginError` whose `code` is
   * a {@link FederationErrorCode} (or another plain code a newer server sends); `tw_error`
   * is taken out of the address first. Calling it again then restores a session that was
   * there before. After a sign-in that succeeded it resolves `true` and the other tabs get
   * `login`, as for `login`. */
  restore(): Promise<boolean>;
  /** Same contract as `window.fetch`. Requests to allowed origins carry a fresh token; a 401
   * is answered by one refresh and one replay. */
  fetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response>;
  /** The headers one request of `method` to `url` needs when it does not go through `fetch`
   * (XMLHttpRequest, Angular's HttpClient, ...), after the same checks as `auth.fetch`
   * (allowed origin, expiry, one refresh for all callers): `Authorization` and, with DPoP, a
   * proof for exactly that method and URL. Send the request with them; on a 401 ask
   * `retry(response)` once. Without a session it resolves with no headers (`{}`: the request
   * goes as it is, and the API answers it); it rejects when a refresh it needed fails
   * (`NetworkError`, `RefreshError`). */
  authorize(method: string, url: string | URL): Promise<Authorization>;
  /** A fresh access token (refreshing if needed). With DPoP (the default) it is useless
   * without a proof: for requests outside `fetch` use `authorize`; for a WebSocket or
   * EventSource, a short-lived ticket your API hands out to an `auth.fetch` call. Rejects with
   * `SessionExpiredError` when not logged in. */
  getAccessToken(): Promise<string>;
  /** The access token's payload (decoded, not verified), or `null`. */
  claims(): AccessTokenClaims | null;
  /** `true` while a token is held. */
  readonly isAuthenticated: boolean;
  /** When the access token expires, in `Date.now()` milliseconds, or `null`. */
  readonly expiresAt: number | null;
  /** Refreshes if the token needs it, or always with `{ force: true }` (e.g. to get new
   * claims after a profile change). Rejects with `SessionExpiredError` (`no_session`) when not
   * logged in, and as a refresh fails otherwise (`NetworkError`, `RefreshError`,
   * `SessionExpiredError`). */
  refresh(options?: { force?: boolean }): Promise<void>;
  /** Forgets the token at once, then revokes the session on the server. Rejects with
   * `NetworkError` if the server could not be told (the local logout stands). */
  logout(): Promise<void>;
  /** Subscribes to an event; returns a function that unsubscribes. */
  on<K extends TokenManagerEvent>(event: K, handler: (detail: TokenManagerEventMap[K]) => void): () => void;
  /** Replaces `globalThis.fetch` with `auth.fetch` (for axios's fetch adapter, ky, ...). */
  install(): void;
  /** Puts the original `globalThis.fetch` back (a wrapper installed over ours passes through). */
  uninstall(): void;
  /** Stops timers, listeners and the cross-tab channel, and frees the wasm memory. Every call
   * still waiting, and every later one that needs the session, rejects with a `ConfigError`
   * (message `bad call: freed`); a request already sent resolves with its answer, a `fetch`
   * to another origin passes through, and `install()` does nothing. */
  free(): void;
  [Symbol.dispose](): void;
}
