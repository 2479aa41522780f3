// A consumer of tokenwarden/verify's types: `tsc -p tests/verify` must pass (and every
// expected-error directive must be an error).
import {
  createVerifier,
  memoryReplayStore,
  postgresReplayStore,
  VerifyError,
  type AccessClaims,
  type ReplayStore,
  type VerifyErrorCode,
} from "tokenwarden/verify";

const pool = { query: async (_text: string, _params?: unknown[]) => ({ rows: [] as unknown[] }) };

export async function main(): Promise<string> {
  const custom: ReplayStore = { claim: async (_key: string, _until: number) => true };
  const verifier = await createVerifier({
    authServer: "https://auth.example.com",
    publicOrigin: ["https://api.example.com"],
    leewaySecs: 5,
    nonceSecret: "a shared secret of at least 32 bytes!!",
    replayStore: Math.random() > 0.5 ? memoryReplayStore({ max: 1000 }) : postgresReplayStore(pool),
    revocationToken: "service-token-0123456789abcdefghijk",
    onStale: "refuse",
    now: () => Date.now(),
  });
  void custom;
  // @ts-expect-error onStale is "refuse" or "accept"
  await createVerifier({ authServer: "x", onStale: "maybe" });
  // @ts-expect-error authServer is required
  await createVerifier({});
  try {
    const claims: AccessClaims = await verifier.verify({
      method: "GET",
      url: "/api/me",
      headers: { host: "api.example.com", dpop: ["a", "b"], authorization: "DPoP x" },
    });
    const jkt: string | undefined = claims.cnf?.jkt;
    const sub: string = claims.sub;
    const plan: unknown = claims["plan"];
    void plan;
    return `${sub} ${jkt ?? "unbound"} ${verifier.nonce()}`;
  } catch (e) {
    if (e instanceof VerifyError) {
      const code: VerifyErrorCode = e.code;
      const status: number = e.status;
      const body: { error: VerifyErrorCode; error_description: string } = e.toJSON();
      const challenge = e.headers["WWW-Authenticate"];
      return `${status} ${code} ${body.error_description} ${String(challenge)}`;
    }
    throw e;
  } finally {
    const { connected, lastEventId, staleForMs } = verifier.revocations.status();
    void [connected, lastEventId, staleForMs];
    verifier.revocations.add("session", "sid", 0);
    verifier.close();
  }
}
