// The reference server on PostgreSQL, one and three instances, beside SQLite, on the same cores:
// `POST /auth/refresh` (a rotation per request) and `GET /api/me` (Bearer; DPoP for one instance).
//
//   node bench/fleet.mjs [--smoke]   prints the table; a full run also replaces section 10 of
//                                    bench/RESULTS.md (bench/run.mjs includes it as section 10)
//
// Needs: target/release/tokenwarden-server built with `--features test-hooks` (TW_BENCH_SERVER),
// target/release/tokenwarden-load (TW_BENCH_LOAD), wrk, and PostgreSQL installed
// (scripts/setup.sh --postgres). A throwaway cluster is started (scripts/pg.sh) and stopped.
// TW_BENCH_PG_PORT (default 25480, or the next free of five) and TW_BENCH_FLEET_PORT (default
// TW_BENCH_PORT + 10, three ports) move the ports.

import { spawn, execFile, execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync, rmSync, existsSync } from "node:fs";
import { tmpdir, cpus } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const execFileAsync = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
export const HOOKS_SECRET = "tokenwarden-bench-hooks-secret";
// 32 bytes of 0x07: every instance of a fleet must share its key-encryption key.
const KEK = Buffer.alloc(32, 7).toString("base64");

/** fetch, again once or twice if the pooled keep-alive socket it took was closed by the server
 * (its header-read timeout closes idle connections; the pool may not have noticed yet). */
async function fetchRetry(url, init) {
  for (let i = 0; ; i++) {
    try {
      return await fetch(url, init);
    } catch (e) {
      if (i >= 2) throw e;
    }
  }
}

function table(head, rows) {
  return [`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`, ...rows.map((r) => `| ${r.join(" | ")} |`)].join("\n");
}

/** A throwaway PostgreSQL cluster on `port` (or the next ports if busy). */
export function startCluster(port) {
  const script = path.join(root, "scripts/pg.sh");
  let dir, admin;
  for (let i = 0; ; i++) {
    dir = mkdtempSync(path.join(tmpdir(), "tw-bench-pg."));
    try {
      admin = execFileSync(script, ["start", dir, String(port + i)], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim();
      break;
    } catch (e) {
      try { execFileSync(script, ["stop", dir]); } catch {}
      if (i >= 4) throw new Error(`PostgreSQL did not start: ${e.stderr}`);
    }
  }
  const stop = () => {
    try { execFileSync(script, ["stop", dir]); } catch {}
  };
  process.on("exit", stop);
  let n = 0;
  return {
    stop,
    /** A new database; its URL. */
    database() {
      const name = `bench_${n++}`;
      execFileSync("psql", [admin, "-qc", `CREATE DATABASE ${name}`]);
      // In the clear, as in the runs on record: the cluster also speaks TLS (scripts/pg.sh),
      // which the server's default on loopback (sslmode=prefer) would take.
      return admin.replace(/\/postgres$/, `/${name}?sslmode=disable`);
    },
  };
}

export async function startInstance(server, port, databaseUrl, extra = []) {
  const proc = spawn(server, [
    "--bind", `127.0.0.1:${port}`, "--test-hooks", "--test-hooks-secret", HOOKS_SECRET,
    "--database-url", databaseUrl, "--access-ttl-secs", "600",
    "--login-ip-per-minute", "1000000", "--login-max-failures", "1000000", "--login-account-max-failures", "1000000",
    // All load comes from 127.0.0.1 and rotates far faster than any user: raised, as in section 7
    // (on PostgreSQL they are still counted, in the database, on every request).
    "--refresh-ip-per-minute", "1000000000", "--refresh-session-per-minute", "1000000000",
    ...extra,
  ], { env: { ...process.env, RUST_LOG: "error", TW_KEY_ENCRYPTION_KEY: KEK }, stdio: ["ignore", "ignore", "inherit"] });
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`${base}/healthz`)).ok) break;
    } catch {}
    if (i > 150) throw new Error(`${base} did not start`);
    await sleep(100);
  }
  return { base, pid: proc.pid, stop: () => new Promise((r) => { proc.once("exit", r); proc.kill("SIGTERM"); }) };
}

export async function newUser(base) {
  const email = `fleet-${Date.now()}-${Math.random().toString(36).slice(2)}@example.com`;
  const res = await fetchRetry(`${base}/test/users`, {
    method: "POST",
    headers: { "x-test-hooks-secret": HOOKS_SECRET, "content-type": "application/json" },
    body: JSON.stringify({ email, password: "bench-password", name: "Bench" }),
  });
  if (!res.ok) throw new Error(`creating a user: ${res.status}`);
  return [email, "bench-password"];
}

async function login(base, [email, password]) {
  const res = await fetchRetry(`${base}/auth/login`, {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ email, password }),
  });
  if (!res.ok) throw new Error(`login: ${res.status}`);
  const refresh = res.headers.getSetCookie().find((c) => c.startsWith("__Host-tw_refresh="));
  return { token: (await res.json()).access_token, refresh: refresh.split(";")[0].split("=")[1] };
}

/** The wrk script of section 7: each token presented once, its child queued for later. */
function refreshScript(tokens, threads) {
  const lua = path.join(mkdtempSync(path.join(tmpdir(), "twwrk-")), "refresh.lua");
  writeFileSync(lua, `local tokens = { ${tokens.map((t) => `"${t}"`).join(", ")} }
local threads = 0
function setup(thread) thread:set("id", threads); threads = threads + 1 end
function init(args)
  queue, head, tail = {}, 1, 0
  for i = id + 1, #tokens, ${threads} do tail = tail + 1; queue[tail] = tokens[i] end
end
function request()
  local t = "none"
  if head <= tail then t = queue[head]; queue[head] = nil; head = head + 1 end
  return wrk.format("POST", nil, { ["X-Tokenwarden"] = "1", ["Cookie"] = "__Host-tw_refresh=" .. t })
end
function response(status, headers, body)
  local c = headers["set-cookie"] or headers["Set-Cookie"]
  local t = status == 200 and c and c:match("^__Host%-tw_refresh=([^;]+)")
  if t then tail = tail + 1; queue[tail] = t end
end
`);
  return lua;
}

/** Successful (2xx) requests per second: a refused refresh is not a rotation. */
function parseWrk(text) {
  const [, count, secs, unit] = /(\d+) requests in ([\d.]+)(ms|s|m)/.exec(text);
  const duration = Number(secs) * { ms: 0.001, s: 1, m: 60 }[unit];
  const p99 = /99%\s+([\d.]+)(us|ms|s)/.exec(text);
  const p99ms = Number(p99[1]) * { us: 0.001, ms: 1, s: 1000 }[p99[2]];
  const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(text)?.[1] ?? 0);
  return { rps: (Number(count) - non2xx) / duration, p99ms, non2xx };
}

/** 64 connections split over the instances, one wrk per instance, all at once. */
async function wrkFleet(instances, secs, argsFor) {
  const per = Math.floor(64 / instances.length);
  const threads = instances.length === 1 ? 2 : 1;
  const results = await Promise.all(instances.map(async (inst, i) => {
    const args = await argsFor(inst, i, threads);
    const { stdout } = await execFileAsync("wrk", [`-t${threads}`, `-c${per}`, `-d${secs}s`, "--latency", ...args], { encoding: "utf8" });
    return parseWrk(stdout);
  }));
  return {
    rps: results.reduce((s, r) => s + r.rps, 0),
    p99: Math.max(...results.map((r) => r.p99ms)),
    non2xx: results.reduce((s, r) => s + r.non2xx, 0),
  };
}

/** Section 10's title and body. */
export async function fleetBench({ server, load, smoke = false }) {
  const secs = smoke ? 1 : 5;
  const runs = smoke ? 1 : 3;
  const sessions = 96;
  const pgPort = Number(process.env.TW_BENCH_PG_PORT ?? 25480);
  const port = Number(process.env.TW_BENCH_FLEET_PORT ?? Number(process.env.TW_BENCH_PORT ?? 18380) + 10);
  const cluster = startCluster(pgPort);
  const sqliteDir = mkdtempSync(path.join(tmpdir(), "twbench-sqlite-"));
  const configs = [
    { name: "SQLite (WAL file), 1 instance", urls: [`sqlite://${sqliteDir}/bench.db`] },
    { name: "PostgreSQL, 1 instance", urls: () => [cluster.database()] },
    { name: "PostgreSQL, 3 instances", urls: () => { const u = cluster.database(); return [u, u, u]; } },
  ];
  const rows = [];
  try {
    for (const config of configs) {
      const urls = typeof config.urls === "function" ? config.urls() : config.urls;
      const instances = [];
      try {
        for (const [i, url] of urls.entries()) instances.push(await startInstance(server, port + i, url));
        const user = await newUser(instances[0].base);
        const { token } = await login(instances[0].base, user);
        const me = [], refresh = [];
        for (let r = 0; r < runs; r++) {
          me.push(await wrkFleet(instances, secs, (inst) => ["-H", `Authorization: Bearer ${token}`, `${inst.base}/api/me`]));
          // Fresh sessions for every run, logged in anywhere: a token is valid on every instance.
          const tokens = [];
          for (let i = 0; i < sessions; i++) tokens.push((await login(instances[i % instances.length].base, user)).refresh);
          const share = (i) => tokens.filter((_, k) => k % instances.length === i);
          refresh.push(await wrkFleet(instances, secs, (inst, i, threads) => ["-s", refreshScript(share(i), threads), `${inst.base}/auth/refresh`]));
        }
        const agg = (xs) => ({ rps: median(xs.map((x) => x.rps)), p99: median(xs.map((x) => x.p99)), non2xx: Math.max(...xs.map((x) => x.non2xx)) });
        const m = agg(me), f = agg(refresh);
        let dpop = null;
        if (instances.length === 1) {
          const out = [];
          for (let r = 0; r < runs; r++) {
            const text = execFileSync(load, [
              "--base", instances[0].base, "--email", user[0], "--password", user[1], "--connections", "64",
              "--secs", String(secs), ...(smoke ? ["--proofs-per-sec", "3000"] : []),
            ], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] });
            out.push(JSON.parse(text.trim().split("\n").pop()));
          }
          dpop = { rps: median(out.map((o) => o.rps)), p99: median(out.map((o) => o.p99_ms)), non2xx: Math.max(...out.map((o) => o.non2xx)) };
        }
        const fmt = (x) => x ? `${Math.round(x.rps)} | ${x.p99.toFixed(1)} ms | ${x.non2xx}` : "— | — | —";
        rows.push([config.name, ...fmt(f).split(" | "), ...fmt(m).split(" | "), ...fmt(dpop).split(" | ")]);
        console.error(`fleet bench: ${config.name}: refresh ${Math.round(f.rps)}/s, me ${Math.round(m.rps)}/s${dpop ? `, DPoP me ${Math.round(dpop.rps)}/s` : ""}`);
      } finally {
        for (const inst of instances) await inst.stop();
      }
    }
  } finally {
    cluster.stop();
    rmSync(sqliteDir, { recursive: true, force: true });
  }
  const load1 = Number(readFileSync("/proc/loadavg", "utf8").split(" ")[0]);
  const body = table(
    ["backend", "`POST /auth/refresh` rotations/s", "p99", "non-2xx", "`GET /api/me` Bearer 2xx/s", "p99", "non-2xx", "`GET /api/me` DPoP 2xx/s", "p99", "non-2xx"],
    rows,
  ) + `\n\nRelease build, ${secs} s per run, median of ${runs} runs, wrk (64 keep-alive connections, split evenly over the instances, one wrk per instance running at once) and tokenwarden-load for DPoP, all on the same ${cpus().length} cores as the servers and PostgreSQL 15 (a throwaway cluster started by scripts/pg.sh: fsync and synchronous_commit off, as a test cluster; a production cluster syncs its WAL on commit, which costs every rotation a disk flush). 1-minute load average ${load1} when this section ended. Refresh as in section 7: every token presented once, its child presented next (${sessions} sessions); the figures count 2xx answers only (a refused refresh is not a rotation), non-2xx should be 0. On PostgreSQL a rotation is the read the refresh starts with plus one conditional write (a compare-and-swap on the session's version; the session row's lock, \`SELECT … FOR UPDATE\`, after three lost races), and each refresh also counts the per-client and per-session throttles in the database (two more statements); \`GET /api/me\` reads the user's profile on every request (SQLite: in the process; PostgreSQL: a round trip to another process), and a DPoP request also inserts its proof's \`jti\` (the fleet-wide replay check). **Three instances on ${cpus().length} cores measure correctness under contention, not scaling**: the instances, PostgreSQL and the load generator share the same cores, so the fleet's figure is what the same machine does with three processes instead of one, and is expected to be lower; scaling needs more machines.`;
  return { title: "10. Server on PostgreSQL: one and three instances beside SQLite", body };
}

// Standalone: print, and replace section 10 of RESULTS.md (unless --smoke).
if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const smoke = process.argv.includes("--smoke");
  const server = process.env.TW_BENCH_SERVER ?? path.join(root, "target/release/tokenwarden-server");
  const load = process.env.TW_BENCH_LOAD ?? path.join(root, "target/release/tokenwarden-load");
  const { title, body } = await fleetBench({ server, load, smoke });
  const text = `## ${title}\n\n${body}\n`;
  console.log(`\n${text}`);
  const file = path.join(here, "RESULTS.md");
  if (!smoke && existsSync(file)) {
    const old = readFileSync(file, "utf8");
    const start = old.indexOf("## 10. ");
    const next = start < 0 ? -1 : old.indexOf("\n## ", start + 1);
    const updated = start < 0 ? `${old.trimEnd()}\n\n${text}` : old.slice(0, start) + text + (next < 0 ? "" : old.slice(next + 1));
    writeFileSync(file, updated);
    console.log("updated section 10 of bench/RESULTS.md");
  }
}
