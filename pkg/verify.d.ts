// tokenwarden/verify: verify tokenwarden access tokens and their DPoP proofs in Node (20+),
// answering exactly as the reference server does for a protected resource.

/** A replay store: `claim` records `key` until `untilSecs` (unix seconds) and resolves `true`,
 * or resolves `false` when `key` is already recorded and live (a replayed proof). It may throw
 * {@link ReplayStoreFullError} when it has no room (the proof is refused, never let through). */
export interface ReplayStore {
  /** It remembers proofs across restarts (and instances): nonces from before the verifier's
   * start need not be refused. */
  shared?: boolean;
  claim(key: string, untilSecs: number): Promise<boolean>;
}

/** What {@link postgresReplayStore} needs of a `pg` Pool (or Client). */
export interface QueryablePool {
  query(text: string, params?: unknown[]): Promise<{ rows: unknown[] }>;
}

/** A request as the verifier reads it. */
export interface VerifyRequest {
  /** `GET`, `POST`, … exactly as received (a proof's `htm` must equal it). */
  method: string;
  /** The request target: path and query (`/api/orders?page=2`), or an absolute URL. */
  url: string;
  /** The request's headers: a fetch `Headers`, or an object of lower-case names whose values are
   * strings or arrays of strings (Node's `req.headersDistinct`; pass it so that two `DPoP`
   * headers are told apart from one). `host` is read when no `publicOrigin` is configured. */
  headers: Headers | Readonly<Record<string, string | readonly string[] | undefined>>;
}

/** `cnf` of a DPoP-bound token (RFC 9449 §6.1). */
export interface Confirmation {
  /** RFC 7638 thumbprint of the key the token is bound to. */
  jkt: string;
}

/** The verified access token's claims (docs/PROTOCOL.md "Access tokens"). */
export interface AccessClaims {
  iss: string;
  aud: string;
  /** The user's id. */
  sub: string;
  /** The session's id. */
  sid: string;
  jti: string;
  iat: number;
  nbf: number;
  exp: number;
  email: string;
  name: string;
  roles?: string[];
  email_verified?: boolean;
  /** Present exactly when the session is DPoP-bound. */
  cnf?: Confirmation;
  /** Claims the app owns (`users set-claims`). */
  [claim: string]: unknown;
}

/** The status of the revocation feed, for tests and operations. */
export interface RevocationStatus {
  /** Whether the event stream is open now. */
  connected: boolean;
  /** The `id` of the last event received (sent back as `Last-Event-ID` on a reconnect). */
  lastEventId: string | null;
  /** 0 while the view is fresh; else for how long it has been stale (before the first `ready`:
   * since the verifier was created). */
  staleForMs: number;
}

export interface Revocations {
  status(): RevocationStatus;
  /** Revokes a session (`sid`) or a token (`jti`) locally until `untilSecs`, as a `revoked` event
   * of the feed would (also without a feed). */
  add(kind: "session" | "token", id: string, untilSecs: number): void;
}

export interface VerifierOptions {
  /** The auth server's URL. Its metadata is read from `/.well-known/oauth-authorization-server`
   * (`issuer`, `jwks_uri`, `dpop_signing_alg_values_supported`, `tokenwarden_audience`,
   * `tokenwarden_revocations_endpoint`); without it, `/.well-known/jwks.json`. `https://`, or
   * `http://` to localhost (the keys that verify every token come from it): anything else is a
   * TypeError unless `allowInsecureHttp`. A `jwks_uri` over plain http on another origin is
   * refused too, unless `allowInsecureHttp`. */
  authServer: string;
  /** Accept an `http://` auth server that is not on this machine, and a plain-http `jwks_uri`
   * its metadata names (a private network where no one can alter their answers). Default false. */
  allowInsecureHttp?: boolean;
  /** The origin(s) this API is reached at: what a proof's `htu` may name. Without any, only a
   * loopback `Host` (localhost, 127.x, [::1]) is trusted, as the reference server does. */
  publicOrigin?: string | readonly string[];
  /** The tokens' `aud` (default: the metadata's `tokenwarden_audience`, else "tokenwarden-api"). */
  audience?: string;
  /** The tokens' `iss` (default: the metadata's `issuer`, else "tokenwarden"). */
  issuer?: string;
  /** Leeway for `exp`/`nbf` in seconds: 0 to 30 (default 5). */
  leewaySecs?: number;
  /** The auth server's `--dpop-nonce-secret` (at least 32 bytes, trimmed as the server trims
   * it): nonces either issues work at both. Default: a random secret of this verifier's own
   * (clients then get one `use_dpop_nonce` round trip here). */
  nonceSecret?: string;
  /** Accept unbound tokens as `Authorization: Bearer` (default false: only DPoP-bound tokens,
   * like the server's `--dpop required`; the server's default mode accepts them). */
  allowBearer?: boolean;
  /** Where accepted proofs are remembered (default: `memoryReplayStore({ max: 1_000_000 })`,
   * per process). Several instances: {@link postgresReplayStore}, so a proof accepted by one is
   * refused by all. */
  replayStore?: ReplayStore;
  /** Nonces issued before this time (unix milliseconds) are refused, this verifier's and the
   * auth server's. Default: the verifier's creation with the in-memory replay store (which
   * starts empty: a proof accepted just before a restart would otherwise pass again; clients
   * get one `use_dpop_nonce` round trip after a restart), 0 with a shared `replayStore`
   * (`postgresReplayStore`, or any store with `shared: true`). A `TypeError` for a time that
   * cannot be milliseconds (one in seconds would refuse nothing) or is ahead of now. */
  refuseNoncesBefore?: number;
  /** The auth server's `--revocation-feed-token-file` token (trimmed, as the server reads the
   * file): subscribe to its revocation feed
   * and refuse revoked sessions and tokens within a second of their revocation. Left out while
   * the auth server has a feed: a warning (revoked tokens then pass until their `exp`); `null`:
   * no feed, on purpose, said nowhere. */
  revocationToken?: string | null;
  /** How long the revocation view stays fresh after the feed's last `ready` or keepalive, counted
   * from when the auth server sent it (default 30000). */
  maxStalenessMs?: number;
  /** Beyond that (or before the feed's first `ready`): "refuse" (default, 503
   * `temporarily_unavailable` with `Retry-After: 5`) or "accept" (logged once). */
  onStale?: "refuse" | "accept";
  /** The clock, in milliseconds (tests). Default `Date.now` for what carries a time (tokens,
   * proofs, nonces, the feed's keepalives) and a monotonic clock for the intervals kept here
   * (the feed's staleness, the JWKS's age), so that a clock set back or forward stretches or
   * cuts none of them; a clock given here is used for both. */
  now?: () => number;
  /** The fetch used for the metadata, the JWKS and the feed (tests). Default `globalThis.fetch`. */
  fetch?: typeof fetch;
}

/** Minimal structural types of the frameworks' objects (no dependency on their packages). */
export interface NodeRequestLike {
  method?: string;
  url?: string;
  headers: Readonly<Record<string, string | readonly string[] | undefined>>;
  headersDistinct?: Readonly<Record<string, readonly string[] | undefined>>;
}
export interface ExpressRequestLike extends NodeRequestLike {
  originalUrl?: string;
  auth?: AccessClaims;
}
export interface ExpressResponseLike {
  statusCode: number;
  /** Already answered (by a timeout middleware, say): a refusal then adds nothing. */
  headersSent?: boolean;
  setHeader(name: string, value: string | readonly string[]): unknown;
  end(body?: string): unknown;
}
export type ExpressMiddleware = (
  req: ExpressRequestLike,
  res: ExpressResponseLike,
  next: (err?: unknown) => void,
) => void;

export interface KoaContextLike {
  method: string;
  url: string;
  originalUrl?: string;
  headers: Readonly<Record<string, string | readonly string[] | undefined>>;
  req: NodeRequestLike;
  status: number;
  body: unknown;
  type: string;
  state: { auth?: AccessClaims; [key: string]: unknown };
  set(name: string, value: string | string[]): void;
}
export type KoaMiddleware = (ctx: KoaContextLike, next: () => Promise<unknown>) => Promise<void>;

export interface FastifyRequestLike {
  method: string;
  url: string;
  headers: Readonly<Record<string, string | readonly string[] | undefined>>;
  raw: NodeRequestLike;
  auth?: AccessClaims;
}
export interface FastifyReplyLike {
  header(name: string, value: string | string[]): FastifyReplyLike;
  headers(values: Record<string, string | string[]>): FastifyReplyLike;
  code(status: number): FastifyReplyLike;
  send(body: string): FastifyReplyLike;
}
export type FastifyHook = (request: FastifyRequestLike, reply: FastifyReplyLike) => Promise<FastifyReplyLike | undefined>;

export interface Verifier {
  /** Verifies the request's access token and, for a bound token, its DPoP proof (recording the
   * proof: it never passes again). Resolves with the claims; rejects with {@link VerifyError},
   * or with a `TypeError` for a request without its `method` or `url` (the caller's mistake:
   * the adapters pass it to the framework's error handling). */
  verify(request: VerifyRequest): Promise<AccessClaims>;
  /** The nonce to send in `DPoP-Nonce` now (the adapters send it on every response). */
  nonce(): string;
  readonly issuer: string;
  readonly audience: string;
  readonly revocations: Revocations;
  /** `app.use(verifier.express())`: `req.auth` is the claims; a refusal is answered. */
  express(): ExpressMiddleware;
  /** `app.use(verifier.koa())`: `ctx.state.auth` is the claims. */
  koa(): KoaMiddleware;
  /** `fastify.addHook("onRequest", verifier.fastify())`: `request.auth` is the claims. */
  fastify(): FastifyHook;
  /** Ends the revocation feed's connection and timers. */
  close(): void;
}

/** Fetches the auth server's metadata and JWKS (and starts the revocation feed when
 * `revocationToken` is given). Importing the module does no I/O; this does. */
export function createVerifier(options: VerifierOptions): Promise<Verifier>;

/** What a browser on another origin must be allowed to send and read (CORS): pass it to `cors`
 * or `@fastify/cors` as is; to `@koa/cors` as allowMethods, allowHeaders and exposeHeaders. */
export const CORS: {
  readonly methods: string[];
  readonly allowedHeaders: string[];
  readonly exposedHeaders: string[];
};

declare global {
  namespace Express {
    interface Request {
      /** The verified claims, set by `verifier.express()` (Fastify: declare `auth?:
       * AccessClaims` on `FastifyRequest` yourself, docs/API.md). */
      auth?: AccessClaims;
    }
  }
}

/** The protocol's error codes a verifier answers with. */
export type VerifyErrorCode =
  | "missing_token"
  | "invalid_token"
  | "invalid_dpop_proof"
  | "use_dpop_nonce"
  | "temporarily_unavailable"
  | "server_error";

/** A refused request: answer with `status`, `headers` (`WWW-Authenticate` challenge(s),
 * `DPoP-Nonce`, `Retry-After`) and the JSON body `{"error", "error_description"}`. */
export class VerifyError extends Error {
  constructor(
    status: 401 | 500 | 503,
    code: VerifyErrorCode,
    description: string,
    headers?: Readonly<Record<string, string | readonly string[]>>,
  );
  readonly name: "VerifyError";
  readonly status: 401 | 500 | 503;
  readonly code: VerifyErrorCode;
  readonly description: string;
  readonly headers: Readonly<Record<string, string | readonly string[]>>;
  toJSON(): { error: VerifyErrorCode; error_description: string };
}

/** Thrown by a replay store that is full of live entries. */
export class ReplayStoreFullError extends Error {}

/** An in-memory replay store of at most `max` live entries (default 1,000,000); full, it refuses
 * new proofs rather than forgetting one. Its routine prune goes no further than the time passed
 * (a monotonic clock), so a clock set forward and back forgets no proof; `now` (tests) is used
 * for both. */
export function memoryReplayStore(options?: { max?: number; now?: () => number }): ReplayStore & { readonly size: number };

/** A replay store in PostgreSQL shared by every instance (`pg` is not a dependency: pass your
 * Pool). Creates `tokenwarden_dpop_proofs (proof TEXT PRIMARY KEY, until BIGINT NOT NULL)`. */
export function postgresReplayStore(pool: QueryablePool, options?: { now?: () => number; table?: string }): ReplayStore;

/** base64url(SHA-256(token)): a proof's `ath`. */
export function ath(token: string): string;
/** The RFC 7638 thumbprint of a P-256 key with base64url coordinates. */
export function thumbprint(x: string, y: string): string;
/** `{origin, path}` of an absolute http(s) URL as `htu` is compared, or null. */
export function normalizeUrl(raw: string): { origin: string; path: string } | null;
/** An http(s) origin, normalised (`https://App.Example.com:443/` → `https://app.example.com`), or null. */
export function normalizeOrigin(raw: string): string | null;
/** Whether a `Host` header names localhost or a loopback address. */
export function isLoopbackHost(host: string): boolean;
