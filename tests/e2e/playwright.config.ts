import { defineConfig } from "@playwright/test";
import { readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
/** The first of the twenty ports the servers use, PORT to PORT + 19 (TW_E2E_PORT, default 18280). */
const PORT = Number(process.env.TW_E2E_PORT ?? 18280);
export const BASE = `http://127.0.0.1:${PORT}`;
/** The demo as `make demo` serves it (www/ + pkg/), with 4-second tokens and test hooks. */
export const DEMO = `http://127.0.0.1:${PORT + 1}`;
/** The Vite consumer fixture (tests/consumer/dist, built from the packed tarball). */
export const CONSUMER = `http://127.0.0.1:${PORT + 2}`;
/** For the 1000-request storms: 10-second tokens, so a storm never outlasts a fresh token. */
export const STORM = `http://127.0.0.1:${PORT + 3}`;
/** Every /test/* request must carry it in X-Test-Hooks-Secret. */
export const HOOKS_SECRET = process.env.TW_TEST_HOOKS_SECRET ?? "tokenwarden-test-hooks-secret";
/** The React fixture (tests/react/dist, StrictMode, built from the packed tarball). */
export const REACT = `http://127.0.0.1:${PORT + 4}`;
/** 10-minute tokens: what a thief carries away is still alive a minute later, so only DPoP
 * can be what refuses it. */
export const LONG = `http://127.0.0.1:${PORT + 5}`;
/** Sign-in codes delivered over SMTP (to SMTP_PORT). */
export const OTP = `http://127.0.0.1:${PORT + 6}`;
/** A real SMTP server (aiosmtpd) the OTP server delivers to; it writes a Maildir, MAILDIR. */
export const SMTP_PORT = Number(process.env.TW_E2E_SMTP_PORT ?? PORT + 7);
export const MAILDIR = path.join(root, `target/e2e-mail-${SMTP_PORT}`);
/** The demo page (www/) as `make demo` serves it, but mailing its codes to SMTP_PORT: sign-up,
 * reset and the other account flows read their codes from the SMTP server's Maildir. */
export const ACCOUNTS = `http://127.0.0.1:${PORT + 8}`;
/** The auth server of the API examples (examples/): its revocation feed on, its nonce secret
 * shared with them, the harness page allowed to reach them (CSP connect-src). */
export const API_AUTH = `http://127.0.0.1:${PORT + 9}`;
/** The examples of examples/, each an API on an origin of its own that the harness page on
 * API_AUTH calls across origins (CORS). */
export const APIS = {
  express: `http://127.0.0.1:${PORT + 10}`,
  koa: `http://127.0.0.1:${PORT + 11}`,
  fastify: `http://127.0.0.1:${PORT + 12}`,
  axum: `http://127.0.0.1:${PORT + 13}`,
};
/** A real OpenID provider (panva's oidc-provider, tests/oidc/provider.mjs) whose client is
 * OIDC_DEMO. */
export const IDP = `http://127.0.0.1:${PORT + 14}`;
/** The demo (`--demo`) with the provider IDP as `--oidc name=idp`. */
export const OIDC_DEMO = `http://127.0.0.1:${PORT + 15}`;
/** The demo (`--demo`) for passkeys, visited by name: WebAuthn refuses IP addresses as RP IDs.
 * `--demo` makes the RP ID `localhost` and the origin `http://localhost:<its port>`. */
export const PASSKEYS = `http://localhost:${PORT + 19}`;
/** The Angular fixture (tests/angular/dist, HttpClient, built from the packed tarball). */
export const ANGULAR = `http://127.0.0.1:${PORT + 16}`;
/** The Vue fixture (tests/vue/dist, built from the packed tarball). */
export const VUE = `http://127.0.0.1:${PORT + 17}`;
/** The Svelte fixture (tests/svelte/dist, built from the packed tarball). */
export const SVELTE = `http://127.0.0.1:${PORT + 18}`;
/** What the examples and API_AUTH share: the feed's service token, the nonce secret. */
export const FEED_TOKEN_FILE = "tests/e2e/feed-token";
export const NONCE_SECRET = "tokenwarden-e2e-shared-nonce-secret-0123456789";

/** The spec files that use the servers BASE, STORM and LONG (the helpers' default is BASE). */
const SHARED = /\/(cross-tab|authorize|dpop|wake)\.spec\.ts$/;
// Any other file that names one of them, or takes the helpers' counters of BASE, would race the
// shared files: refused before any test runs.
for (const f of readdirSync(path.join(root, "tests/e2e"))) {
  if (!f.endsWith(".spec.ts") || SHARED.test(`/${f}`)) continue;
  const src = readFileSync(path.join(root, "tests/e2e", f), "utf8");
  const helpers = /import \{([^}]*)\} from "\.\/helpers"/.exec(src)?.[1] ?? "";
  if (/\b(BASE|STORM|LONG)\b/.test(src) || /\b(stats|reset)\b/.test(helpers)) {
    throw new Error(`tests/e2e/${f} uses a shared server: add it to SHARED in playwright.config.ts`);
  }
}

// Chromium from Debian (toolchain.md): never `playwright install`.
export const chromium = {
  executablePath: "/usr/bin/chromium",
  args: [
    "--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
  ],
};

/** A reference server on `port` with test hooks (built with `--features test-hooks`), an
 * in-memory database and short tokens. */
function server(port: number, args: string, ttl = 4) {
  return {
    command:
      `target/debug/tokenwarden-server --bind 127.0.0.1:${port} --test-hooks --test-hooks-secret ${HOOKS_SECRET} ` +
      `--database-url sqlite::memory: --access-ttl-secs ${ttl} --login-ip-per-minute 100000 ${args}`,
    url: `http://127.0.0.1:${port}/healthz`,
    cwd: root,
    reuseExistingServer: false,
    env: { RUST_LOG: "warn" },
    stdout: "ignore" as const,
    stderr: "pipe" as const,
  };
}

/** An example API of examples/, started once API_AUTH answers (it reads its metadata). */
function example(name: string, origin: string) {
  const run = name === "axum" ? "target/debug/tokenwarden-example-axum" : `node examples/${name}/server.mjs`;
  return {
    command: `node tests/e2e/after.mjs ${API_AUTH}/healthz ${run}`,
    // Ready when it answers at all: 401 without a token.
    url: `${origin}/orders`,
    cwd: root,
    reuseExistingServer: false,
    env: {
      AUTH_SERVER: API_AUTH,
      PUBLIC_ORIGIN: origin,
      SPA_ORIGIN: API_AUTH,
      PORT: new URL(origin).port,
      BIND: new URL(origin).host,
      NONCE_SECRET,
      REVOCATION_TOKEN: readFileSync(path.join(root, FEED_TOKEN_FILE), "utf8").trim(),
    },
    stdout: "ignore" as const,
    stderr: "pipe" as const,
  };
}

export default defineConfig({
  testDir: ".",
  outputDir: path.join(root, "target/e2e-results"),
  timeout: 120_000,
  // An assertion that waits (a page's sign-in, which hashes a password) waits up to 15 s, not
  // Playwright's 5: two test files and their servers share the machine's cores.
  expect: { timeout: 15_000 },
  // The tests read their server's global counters, so two tests of one server never run at
  // once: the files that share BASE, STORM and LONG run one at a time, and beside them, one at
  // a time, the files whose servers are their own (one each; accounts and otp share the SMTP
  // server, in the same project). A file that uses BASE, STORM or LONG belongs in SHARED.
  workers: 2,
  fullyParallel: false,
  projects: [
    { name: "shared", testMatch: SHARED, workers: 1 },
    { name: "own-server", testIgnore: SHARED, workers: 1 },
  ],
  reporter: [["list"]],
  use: { browserName: "chromium", launchOptions: chromium },
  webServer: [
    // 4-second access tokens (refresh due after 2 s), counters and fault hooks.
    // Its pages may also reach LONG (CSP connect-src): a hostile-script test's other origin.
    server(PORT, `--www-dir tests/e2e/site --pkg-dir pkg --connect-src ${LONG}`),
    // The demo as `make demo` serves it (www/ + pkg/).
    server(PORT + 1, "--demo"),
    // The Vite consumer fixture, built from the packed tarball.
    server(PORT + 2, "--demo --www-dir tests/consumer/dist --pkg-dir /nonexistent"),
    server(PORT + 3, "--www-dir tests/e2e/site --pkg-dir pkg", 10),
    // The React fixture, built from the packed tarball. The framework fixtures' servers have
    // 10-second tokens: a step that must find the token fresh has 5 s, not 2, on a loaded machine.
    server(PORT + 4, "--demo --www-dir tests/react/dist --pkg-dir /nonexistent", 10),
    // It also answers pages of BASE (CORS): the attacker's server of a hostile-script test.
    server(PORT + 5, `--www-dir tests/e2e/site --pkg-dir pkg --allowed-origin ${BASE}`, 600),
    // The SMTP server (scripts/setup.sh installs Debian's python3-aiosmtpd), then the server that
    // mails sign-in codes to it.
    {
      command: `/usr/bin/python3 -m aiosmtpd -n -l 127.0.0.1:${SMTP_PORT} -c aiosmtpd.handlers.Mailbox ${MAILDIR}`,
      port: SMTP_PORT,
      cwd: root,
      reuseExistingServer: false,
      stdout: "ignore" as const,
      stderr: "pipe" as const,
    },
    server(PORT + 6, `--www-dir tests/e2e/site --pkg-dir pkg --smtp-url smtp://127.0.0.1:${SMTP_PORT}`, 60),
    server(PORT + 8, `--demo --smtp-url smtp://127.0.0.1:${SMTP_PORT}`, 60),
    server(
      PORT + 9,
      `--www-dir tests/e2e/site --pkg-dir pkg --connect-src ${Object.values(APIS).join(",")} ` +
        `--revocation-feed-token-file ${FEED_TOKEN_FILE} --dpop-nonce-secret ${NONCE_SECRET}`,
      60,
    ),
    ...Object.entries(APIS).map(([name, origin]) => example(name, origin)),
    {
      command: `node tests/oidc/provider.mjs ${PORT + 14} ${OIDC_DEMO}`,
      url: `${IDP}/.well-known/openid-configuration`,
      cwd: root,
      reuseExistingServer: false,
      stdout: "ignore" as const,
      stderr: "pipe" as const,
    },
    // The Angular fixture, built from the packed tarball. Its pages may also call this server by
    // another name (localhost: another origin, which answers them, CORS), which gets no token.
    server(
      PORT + 16,
      `--demo --www-dir tests/angular/dist --pkg-dir /nonexistent --connect-src http://localhost:${PORT + 16} ` +
        `--allowed-origin ${ANGULAR}`,
      10,
    ),
    // The Vue and Svelte fixtures, built from the packed tarball.
    server(PORT + 17, "--demo --www-dir tests/vue/dist --pkg-dir /nonexistent", 10),
    server(PORT + 18, "--demo --www-dir tests/svelte/dist --pkg-dir /nonexistent", 10),
    server(
      PORT + 15,
      `--demo --oidc name=idp,issuer=${IDP},client-id=tokenwarden-test,client-secret-file=tests/oidc/client-secret,link=verified-email`,
      60,
    ),
    server(PORT + 19, "--demo", 60),
  ],
});
