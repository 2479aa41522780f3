// tokenwarden/passkeys: passkeys (WebAuthn) for a TokenManager. `import "tokenwarden/passkeys"`
// once, anywhere: every TokenManager then has the methods below (docs/API.md, "Passkeys").
import type { TokenwardenError } from "./tokenwarden.js";

/** A passkey of the signed-in account, as the server lists it (times in Unix seconds). */
export interface PasskeyInfo {
  /** The credential id (base64url): what `removePasskey` takes. */
  id: string;
  name: string;
  created_at: number;
  /** `null` until it first signs something in. */
  last_used_at?: number | null;
}

/** The browser's side of a ceremony did not happen. `cancelled`: the user dismissed the
 * prompt, it timed out, the device has no passkey for this site (browsers do not say which),
 * or the `signal` aborted it; `exists`: this authenticator holds a passkey of the account
 * already (`registerPasskey`); `no_credential`: the account has no passkey to answer with
 * (`completeSignIn` with `{ passkey: true }`; offer the emailed code); `unsupported`: no
 * WebAuthn here (or no conditional mediation, for `{ conditional: true }`), or the page's
 * origin is not within the server's RP ID. Never a logout. */
export interface PasskeyError extends Error {
  name: "PasskeyError";
  code: "cancelled" | "exists" | "no_credential" | "unsupported";
  /** The browser's DOMException, when there was one. */
  cause?: unknown;
}

declare module "./tokenwarden.js" {
  interface TokenwardenError {
    /** For `step_up_required` (a `LoginError`, HTTP 403): the action needs a sign-in or
     * step-up younger than this many seconds. Prompt, `stepUp()`, try again: the session is
     * kept. */
    maxAge?: number;
  }

  interface TokenManager {
    /** Signed in: creates a passkey (discoverable, user verification) for the account and
     * registers it. Needs a recent sign-in: else `LoginError` `step_up_required` (with
     * `maxAge`). Rejects with {@link PasskeyError} (`cancelled`, `exists`, `unsupported`),
     * `LoginError` (`invalid_credentials`: the server refused the credential,
     * `passkeys_unavailable`, `invalid_request`), `SessionExpiredError` (`no_session`) or
     * `NetworkError`. */
    registerPasskey(options?: { name?: string }): Promise<PasskeyInfo>;
    /** Signs in with a passkey, no username typed, exactly as `login` does (a new DPoP key,
     * the `login` event, the other tabs told). `conditional`: the browser offers the passkeys
     * in the autofill of an `<input autocomplete="username webauthn">` and the promise
     * settles when the user picks one (abort it with `signal` when they sign in another
     * way); `PasskeyError` `unsupported` where the browser has no conditional mediation.
     * Rejects with {@link PasskeyError} (`cancelled`, `unsupported`), `LoginError`
     * (`invalid_credentials`: a passkey the server does not know, e.g. removed;
     * `too_many_attempts`; `passkeys_unavailable`) or `NetworkError`. */
    loginWithPasskey(options?: { conditional?: boolean; signal?: AbortSignal }): Promise<void>;
    /** Signed in: the user proves who they are again with one of the account's passkeys, then
     * the token is refreshed so that its `auth_time` is now and its `amr` has `hwk`. The
     * answer to `step_up_required`. Rejects with {@link PasskeyError} (`cancelled`, ...),
     * `LoginError` (`passkeys_unavailable`: the account has no passkey, or the server none;
     * `invalid_credentials`), `SessionExpiredError` or `NetworkError`; never logs out. */
    stepUp(): Promise<void>;
    /** Completes the sign-in that `error` (a `LoginError` `second_factor_required` from
     * `login`, or from `loginWithCode` or `resetPassword`: then by the passkey only) asked a
     * second factor for: with `{ passkey: true }` (when `error.secondFactor.passkey` is set)
     * or with the emailed `{ code }` (when `error.secondFactor.email_code`), by the key that
     * sent the password or code; then exactly as `login`. A wrong code (`invalid_code`, with `attemptsLeft`) may be tried again with the
     * same `error`. Rejects with `ConfigError` (no `secondFactor`, or not exactly one of
     * `passkey` and `code`), {@link PasskeyError}, `LoginError` (`invalid_code`,
     * `code_expired`, `invalid_credentials`: the pending sign-in is over, sign in again) or
     * `NetworkError`. */
    completeSignIn(error: TokenwardenError, answer: { passkey: true } | { code: string }): Promise<void>;
    /** Signed in: whether password sign-ins of the account need a second factor (a passkey,
     * or an emailed code). Needs a recent sign-in (`step_up_required`); `passkeys_unavailable`
     * when the account has no passkey and the server sends no codes. */
    setSecondFactor(required: boolean): Promise<void>;
    /** Signed in: the account's passkeys. */
    listPasskeys(): Promise<PasskeyInfo[]>;
    /** Signed in: removes a passkey (its `id`), and ends every session it signed in (by itself
     * or as the second factor), on every device: this one too if it is one, which the next
     * call then finds ended (`sessionExpired`). Needs a recent sign-in (`step_up_required`);
     * `LoginError` `not_found` for an id the account does not have. */
    removePasskey(id: string): Promise<void>;
  }
}

export {};
