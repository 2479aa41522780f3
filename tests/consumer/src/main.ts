// What an SPA developer writes: typed options, typed events and errors, axios through install().
import init, {
  TokenManager,
  type AccessTokenClaims,
  type TokenManagerOptions,
  type TokenwardenError,
} from "tokenwarden";
import axios from "axios";
// A side-effect import (the package's sideEffects keeps it in the bundle): passkey methods on
// every TokenManager, typed by module augmentation.
import "tokenwarden/passkeys";
import type { PasskeyError, PasskeyInfo } from "tokenwarden/passkeys";

const options: TokenManagerOptions = { refreshLeewaySeconds: 30, crossTab: true };

async function main() {
  await init();
  const auth = new TokenManager(options);
  const refreshes: number[] = [];
  const off: () => void = auth.on("refresh", (detail) => {
    const seconds: number = detail.expiresIn;
    refreshes.push(seconds);
  });
  auth.on("sessionExpired", ({ reason }) => {
    const r: "invalid_grant" | "token_reused" | "expired" = reason;
    document.title = r;
  });

  const api = {
    async login(email: string, password: string): Promise<string | null> {
      try {
        await auth.login({ email, password });
        return null;
      } catch (e) {
        const err = e as TokenwardenError;
        return `${err.name}:${err.code}`;
      }
    },
    /** Sign-in by emailed code, typed: `name:code:attemptsLeft` of a refusal, or null. */
    async codeLogin(email: string, code: string): Promise<string | null> {
      try {
        await auth.requestCode({ email });
        await auth.loginWithCode({ email, code });
        return null;
      } catch (e) {
        const err = e as TokenwardenError;
        const left: number | undefined = err.attemptsLeft;
        return `${err.name}:${err.code}:${left}`;
      }
    },
    /** A passkey registration, typed: `ok:name`, or `name:code` of the refusal. */
    async passkey(): Promise<string> {
      try {
        const info: PasskeyInfo = await auth.registerPasskey({ name: "consumer" });
        return `ok:${info.name}`;
      } catch (e) {
        const err = e as PasskeyError | TokenwardenError;
        return `${err.name}:${err.code}`;
      }
    },
    async me(): Promise<{ email: string }> {
      const res: Response = await auth.fetch("/api/me");
      return res.json();
    },
    claims(): AccessTokenClaims | null {
      return auth.claims();
    },
    refreshes(): number[] {
      return refreshes;
    },
    /** The migration path from interceptors: axios's fetch adapter over the intercepted fetch. */
    async axiosEcho(): Promise<{ authorization: string | null }> {
      auth.install();
      try {
        // The test server answers /test/* only with its hooks' secret (set by the e2e test).
        const secret = (window as unknown as { TW_TEST_HOOKS_SECRET?: string }).TW_TEST_HOOKS_SECRET ?? "";
        const res = await axios.get("/test/echo", { adapter: "fetch", headers: { "x-test-hooks-secret": secret } });
        return res.data;
      } finally {
        auth.uninstall();
      }
    },
    async axiosMe(): Promise<{ email: string }> {
      auth.install();
      try {
        return (await axios.get("/api/me", { adapter: "fetch" })).data;
      } finally {
        auth.uninstall();
      }
    },
    unsubscribe: off,
  };
  (window as unknown as { consumer: typeof api }).consumer = api;
  document.getElementById("status")!.textContent = "ready";
}

main();
