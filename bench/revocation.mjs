// How soon other services refuse a revoked token: three reference servers on one PostgreSQL
// database, three Node APIs (examples/express, koa, fastify: tokenwarden/verify) and one Rust
// API (examples/axum: tokenwarden-dpop), each API following the revocation feed of one of the
// instances. Each round signs a DPoP-bound session in on one instance, checks that every API
// accepts it, then revokes it through another instance (a logout, the session revoked from a
// second session of the user, a password change from it: in turn) and polls every API, a new
// proof every 5 ms, until it answers 401 invalid_token. Latency: from the revoking request's
// start to the first refusal.
//
//   node bench/revocation.mjs [--smoke]   prints the table (bench/run.mjs: section 12)
//
// Needs: TW_BENCH_SERVER (built with `--features test-hooks`), TW_BENCH_AXUM (the axum
// example), PostgreSQL (scripts/setup.sh --postgres). TW_BENCH_PORT + 30 and the 7 ports after
// it; TW_BENCH_PG_PORT + 10 for the cluster.

import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { DpopClient } from "../tests/verify/helpers.mjs";
import { HOOKS_SECRET, newUser, startCluster, startInstance } from "./fleet.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const FEED_TOKEN = "bench-revocation-feed-token-0123456789abcdef";
const NONCE_SECRET = "bench-revocation-nonce-secret-0123456789abcdef";
const KINDS = ["logout", "session revoked", "password change"];

function table(head, rows) {
  return [`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`, ...rows.map((r) => `| ${r.join(" | ")} |`)].join("\n");
}
const quantile = (xs, q) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)];
};

/** An example API on `port`, following `authServer`. */
async function startApi(name, command, args, port, authServer) {
  const origin = `http://127.0.0.1:${port}`;
  const proc = spawn(command, args, {
    cwd: root,
    env: {
      ...process.env, AUTH_SERVER: authServer, PUBLIC_ORIGIN: origin, SPA_ORIGIN: authServer, PORT: String(port),
      BIND: `127.0.0.1:${port}`, NONCE_SECRET, REVOCATION_TOKEN: FEED_TOKEN,
    },
    stdio: ["ignore", "ignore", "inherit"],
  });
  for (let i = 0; ; i++) {
    try {
      await fetch(`${origin}/orders`);
      break;
    } catch {}
    if (i > 150) throw new Error(`${name} did not start`);
    await sleep(100);
  }
  return { name, origin, stop: () => new Promise((r) => { proc.once("exit", r); proc.kill("SIGTERM"); }) };
}

/** A DPoP-bound session of `email` on `base`. */
async function signIn(base, [email, password]) {
  const c = new DpopClient();
  const res = await c.fetch("POST", `${base}/auth/login`, { body: { email, password } });
  if (res.status !== 200) throw new Error(`login: ${res.status} ${res.text}`);
  c.token = res.json.access_token;
  c.sid = JSON.parse(Buffer.from(c.token.split(".")[1], "base64url")).sid;
  return c;
}

const CSRF = { "x-tokenwarden": "1" };

/** Revokes `a`'s session through `base` (`b`: a second session of the same user). */
async function revoke(kind, a, b, base, password) {
  const res =
    kind === "logout"
      ? await a.fetch("POST", `${base}/auth/logout`, { token: a.token, headers: CSRF })
      : kind === "session revoked"
        ? await b.fetch("DELETE", `${base}/auth/sessions/${a.sid}`, { token: b.token, headers: CSRF })
        : await b.fetch("POST", `${base}/auth/password/change`, {
            token: b.token, headers: CSRF, body: { current_password: password, new_password: `${password}-new-1` },
          });
  if (res.status >= 300) throw new Error(`${kind}: ${res.status} ${res.text}`);
}

/** Polls `api` with `a`'s token until it is refused; milliseconds since `start`. */
async function refusedAfter(api, a, start) {
  for (;;) {
    const res = await a.fetch("GET", `${api.origin}/orders`, { token: a.token });
    if (res.status === 401 && res.json?.error === "invalid_token") return performance.now() - start;
    if (res.status !== 200) throw new Error(`${api.name}: ${res.status} ${res.text}`);
    if (performance.now() - start > 10_000) throw new Error(`${api.name}: still accepted after 10 s`);
    await sleep(5);
  }
}

export async function revocationBench({ server, axum, smoke = false }) {
  const rounds = smoke ? 3 : 100;
  const port = Number(process.env.TW_BENCH_PORT ?? 18380) + 30;
  const cluster = startCluster(Number(process.env.TW_BENCH_PG_PORT ?? 25480) + 10);
  const db = cluster.database();
  const tokenFile = path.join(mkdtempSync(path.join(tmpdir(), "tw-bench-feed.")), "token");
  writeFileSync(tokenFile, FEED_TOKEN);
  const extra = ["--revocation-feed-token-file", tokenFile, "--dpop-nonce-secret", NONCE_SECRET];
  const instances = [];
  const apis = [];
  try {
    for (let i = 0; i < 3; i++) instances.push(await startInstance(server, port + i, db, extra));
    const node = (name) => ["node", [`examples/${name}/server.mjs`]];
    const specs = [["express", ...node("express")], ["koa", ...node("koa")], ["fastify", ...node("fastify")], ["axum", axum, []]];
    for (const [i, [name, command, args]] of specs.entries())
      apis.push(await startApi(name, command, args, port + 3 + i, instances[i % 3].base));
    const latencies = Object.fromEntries(apis.map((a) => [a.name, []]));
    const byKind = Object.fromEntries(KINDS.map((k) => [k, []]));
    for (let round = 0; round < rounds; round++) {
      const kind = KINDS[round % KINDS.length];
      const home = instances[round % 3].base;
      const other = instances[(round + 1) % 3].base;
      const user = await newUser(home);
      const a = await signIn(home, user);
      const b = kind === "logout" ? null : await signIn(other, user);
      // Every API accepts the session first (within 10 s of start-up: the feed's snapshot).
      for (const api of apis)
        for (let i = 0; ; i++) {
          const res = await a.fetch("GET", `${api.origin}/orders`, { token: a.token });
          if (res.status === 200) break;
          if (i > 200) throw new Error(`${api.name} refuses a live session: ${res.status} ${res.text}`);
          await sleep(50);
        }
      const start = performance.now();
      await revoke(kind, a, b, other, user[1]);
      const ms = await Promise.all(apis.map((api) => refusedAfter(api, a, start)));
      ms.forEach((m, i) => latencies[apis[i].name].push(m));
      byKind[kind].push(...ms);
    }
    const all = Object.values(latencies).flat();
    const row = (label, xs) => [label, String(xs.length), `${quantile(xs, 0.5).toFixed(0)} ms`, `**${quantile(xs, 0.99).toFixed(0)} ms**`, `${Math.max(...xs).toFixed(0)} ms`];
    const rows = [
      ...apis.map((api) => row(`${api.name} (follows instance ${(apis.indexOf(api) % 3) + 1})`, latencies[api.name])),
      ...KINDS.map((k) => row(k, byKind[k])),
      row("**every API, every revocation**", all),
    ];
    const target = quantile(all, 0.99) <= 1000 ? "met" : "**missed**";
    return {
      title: "12. Revocation reaching other services",
      body:
        table(["", "refusals", "p50", "p99", "max"], rows) +
        `\n\n${rounds} revocations (${KINDS.join(", ")}, in turn), each made on another instance than the one the session signed in on; three reference servers (release build) on one PostgreSQL database; four APIs, each following the revocation feed of one instance (examples/: Express, Koa, Fastify with tokenwarden/verify, axum with tokenwarden-dpop), polled every 5 ms with a new proof. Latency runs from the revoking request's start to the API's first 401 \`invalid_token\`: the revocation's commit, PostgreSQL's NOTIFY to the instance the API follows, the feed's event, the API's next check. Target: p99 ≤ 1 s for every API (${target}).`,
    };
  } finally {
    for (const api of apis) await api.stop();
    for (const i of instances) await i.stop();
    cluster.stop();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { title, body } = await revocationBench({
    server: process.env.TW_BENCH_SERVER ?? path.join(root, "target/release/tokenwarden-server"),
    axum: process.env.TW_BENCH_AXUM ?? path.join(root, "target/release/tokenwarden-example-axum"),
    smoke: process.argv.includes("--smoke"),
  });
  console.log(`## ${title}\n\n${body}`);
}
