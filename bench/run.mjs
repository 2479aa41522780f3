// tokenwarden benchmarks, side by side with the peers, in one run on one machine.
//
//   node bench/run.mjs           full run: prints the tables and writes bench/RESULTS.md
//   node bench/run.mjs --smoke   tiny sizes, writes target/bench-smoke.md (part of `make test`)
//
// Needs: pkg/ built (scripts/build-pkg.sh), target/release/tokenwarden-server, bench/node_modules,
// Chromium at /usr/bin/chromium and wrk; for section 8 also Firefox ESR, geckodriver and
// WebKitWebDriver (scripts/setup.sh --browser). `make bench` prepares all of it.
import { spawn, execFile, execFileSync } from "node:child_process";
import { promisify } from "node:util";
import { gzipSync } from "node:zlib";
import { mkdtempSync, readFileSync, writeFileSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir, cpus, totalmem } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import * as esbuild from "esbuild";
import { Browser, Server, certificate, scratch } from "../tests/engines/webdriver.mjs";

const execFileAsync = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..");
const SMOKE = process.argv.includes("--smoke");
// --only=1,5 runs those sections (and does not write RESULTS.md).
const ONLY = process.argv.find((a) => a.startsWith("--only="))?.slice(7).split(",").map(Number);
const want = (n) => !ONLY || ONLY.includes(n);
const N = SMOKE
  ? { overhead: 50, repeats: 1, storm: 40, stormTabs: 4, startup: 2, wrkSecs: 1, wrkRuns: 1, proofs: 20, proofWarmup: 5, proofRuns: 1, proofChunk: 10 }
  : { overhead: 2000, repeats: 5, storm: 1000, stormTabs: 4, startup: 20, wrkSecs: 5, wrkRuns: 3, proofs: 2000, proofWarmup: 200, proofRuns: 11, proofChunk: 20 };
// The smoke run only proves the harness works, so it may use the debug build the tests made.
const SERVER = process.env.TW_BENCH_SERVER ?? path.join(root, "target/release/tokenwarden-server");
// The servers' test hooks answer only requests that carry this (X-Test-Hooks-Secret).
const HOOKS_SECRET = process.env.TW_TEST_HOOKS_SECRET ?? "tokenwarden-bench-hooks-secret";
// The DPoP load generator (bench/load): wrk cannot sign a proof per request.
const LOAD = process.env.TW_BENCH_LOAD ?? path.join(root, "target/release/tokenwarden-load");
const CHROMIUM_ARGS = [
  "--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--no-first-run",
];

// ---- small helpers ---------------------------------------------------------------------------

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const ms = (x) => `${x.toFixed(1)} ms`;
const kb = (b) => `${(b / 1024).toFixed(1)} KB`;
const sleep = (t) => new Promise((r) => setTimeout(r, t));
const gz = (buf) => gzipSync(buf, { level: 9 }).length;
function table(head, rows) {
  const line = (cells) => `| ${cells.join(" | ")} |`;
  return [line(head), line(head.map(() => "---")), ...rows.map(line)].join("\n");
}
const out = [];
function section(title, body) {
  const text = `## ${title}\n\n${body}\n`;
  out.push(text);
  console.log(`\n${text}`);
}

/** A tokenwarden-server on `port`; resolves when it answers /healthz. */
async function startServer(port, extra) {
  const dir = mkdtempSync(path.join(tmpdir(), "twbench-"));
  const proc = spawn(
    SERVER,
    [
      "--bind", `127.0.0.1:${port}`, "--test-hooks", "--test-hooks-secret", HOOKS_SECRET, "--demo",
      "--database-url", `sqlite://${dir}/bench.db`,
      "--login-ip-per-minute", "1000000", "--login-max-failures", "1000000", "--login-account-max-failures", "1000000",
      // Every client here is 127.0.0.1, and section 7 rotates far faster than any one user:
      // the per-client and per-session refresh limits would measure themselves.
      "--refresh-ip-per-minute", "1000000", "--refresh-session-per-minute", "1000000",
      "--www-dir", path.join(here, "site"), "--pkg-dir", path.join(root, "pkg"),
      ...extra,
    ],
    { env: { ...process.env, RUST_LOG: "error" }, stdio: ["ignore", "ignore", "inherit"] },
  );
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 100; i++) {
    try {
      if ((await fetch(`${base}/healthz`)).ok) break;
    } catch {}
    await sleep(100);
  }
  const hook = async (method, p, body) => {
    const secret = { "x-test-hooks-secret": HOOKS_SECRET };
    const res = await fetch(base + p, {
      method,
      headers: body ? { ...secret, "content-type": "application/json" } : secret,
      body: body ? JSON.stringify(body) : undefined,
    });
    if (!res.ok) throw new Error(`${method} ${p}: ${res.status}`);
    return res.status === 204 ? null : res.json();
  };
  let users = 0;
  const newUser = async () => {
    const email = `bench${port}-${Date.now()}-${users++}@example.com`;
    await hook("POST", "/test/users", { email, password: "bench-password", name: "Bench" });
    return [email, "bench-password"];
  };
  return {
    base, hook, newUser, pid: proc.pid,
    stop: () => { proc.kill("SIGTERM"); rmSync(dir, { recursive: true, force: true }); },
  };
}

// ---- the run ---------------------------------------------------------------------------------

const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: CHROMIUM_ARGS });
const pageErrors = [];
async function openPage(context, url) {
  const page = await context.newPage();
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  await page.goto(url);
  await page.waitForFunction(() => window.ready === true);
  return page;
}

// Server A: 10-minute tokens (overhead, start-up, peers on server-side expiry).
// Server B: 4-second tokens, so tokenwarden's own clock sees them expire (due after 2 s).
// TW_BENCH_PORT moves both servers (default 18380 and 18381).
const PORT = Number(process.env.TW_BENCH_PORT ?? 18380);
const A = await startServer(PORT, ["--access-ttl-secs", "600"]);
const B = await startServer(PORT + 1, ["--access-ttl-secs", "4"]);

try {
  // 1. Per-request overhead --------------------------------------------------------------------
  if (want(1)) {
    // Two contexts: tabs of one browser share their session (the cross-tab channel), and a
    // Bearer client and a DPoP client are two different apps.
    const context = await browser.newContext();
    const context2 = await browser.newContext();
    // The same loop for a Bearer session (`dpop: false`, like with like: plain fetch attaches
    // the same Bearer token by hand) and for a DPoP session (a proof signed per request;
    // plain fetch still sends the Bearer token of the first session, as an app without DPoP).
    const bearerPage = await openPage(context, `${A.base}/?peer=tokenwarden&dpop=0`);
    const dpopPage = await openPage(context2, `${A.base}/?peer=tokenwarden`);
    for (const page of [bearerPage, dpopPage]) {
      const [email, password] = await A.newUser();
      await page.evaluate(([e, p]) => peer.login(e, p), [email, password]);
    }
    const bearerToken = await bearerPage.evaluate(() => auth.getAccessToken());
    // What any DPoP client pays, whatever its library: in the DPoP page, `fetch` with a proof
    // written by hand (the page's stored key, read from IndexedDB as any script of the origin
    // can; a random jti, SHA-256 of the token for ath on every request (tokenwarden hashes each
    // token once), the server's newest nonce, an ES256 signature), against the same server,
    // which verifies it as it verifies tokenwarden's.
    await dpopPage.evaluate(async () => {
      const db = await new Promise((ok, ko) => {
        const r = indexedDB.open("tokenwarden");
        r.onsuccess = () => ok(r.result);
        r.onerror = () => ko(r.error);
      });
      const key = await new Promise((ok, ko) => {
        const r = db.transaction("keys").objectStore("keys").getAll();
        r.onsuccess = () => ok(r.result[0]);
        r.onerror = () => ko(r.error);
      });
      db.close();
      const token = await auth.getAccessToken();
      const enc = new TextEncoder();
      const b64u = (buf) => {
        let s = "";
        for (const b of new Uint8Array(buf)) s += String.fromCharCode(b);
        return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
      };
      const htu = new URL("/api/me", location.href).href;
      let nonce;
      const once = async () => {
        const claims = { jti: b64u(crypto.getRandomValues(new Uint8Array(16))), htm: "GET", htu, iat: Math.floor(Date.now() / 1000) };
        if (nonce) claims.nonce = nonce;
        claims.ath = b64u(await crypto.subtle.digest("SHA-256", enc.encode(token)));
        const input = `${key.h}.${b64u(enc.encode(JSON.stringify(claims)))}`;
        // With the algorithm of the client's key: Ed25519 where WebCrypto has it, else P-256.
        const alg = key.k.algorithm.name === "Ed25519" ? { name: "Ed25519" } : { name: "ECDSA", hash: "SHA-256" };
        const sig = await crypto.subtle.sign(alg, key.k, enc.encode(input));
        const res = await fetch("/api/me", { headers: { Authorization: `DPoP ${token}`, DPoP: `${input}.${b64u(sig)}` } });
        const fresh = res.headers.get("dpop-nonce");
        const retry = res.status === 401 && fresh && fresh !== nonce;
        nonce = fresh ?? nonce;
        return [res, retry];
      };
      // As every DPoP client must: one retry when the server asks for its newer nonce.
      window.handDpop = async () => {
        const [res, retry] = await once();
        return retry ? (await once())[0] : res;
      };
      // The first proof has no nonce yet: the server answers use_dpop_nonce with one.
      if ((await window.handDpop()).status !== 200 && (await window.handDpop()).status !== 200) {
        throw new Error("the hand-made DPoP request was refused");
      }
    });
    // Interleaved request by request (plain, auth.fetch, plain, ...) so that the machine's
    // drift, large in a headless browser on 2 cores, hits both alike.
    const measure = async (page, hand) => {
      const runs = { plain: [], tw: [], hand: [] };
      for (let r = 0; r < N.repeats; r++) {
        const t = await page.evaluate(async ([n, token, hand]) => {
          const out = { plain: 0, tw: 0, hand: 0 };
          const kinds = [["plain", () => fetch("/api/me", { headers: { Authorization: `Bearer ${token}` } })],
            ["tw", () => auth.fetch("/api/me")]];
          if (hand) kinds.push(["hand", () => window.handDpop()]);
          for (let i = 0; i < n; i++) {
            // Which goes first rotates, so none always follows another.
            for (let j = 0; j < kinds.length; j++) {
              const [key, send] = kinds[(i + j) % kinds.length];
              const t0 = performance.now();
              const res = await send();
              await res.arrayBuffer();
              if (res.status !== 200) throw new Error(`${key}: HTTP ${res.status}`);
              out[key] += performance.now() - t0;
            }
          }
          return out;
        }, [N.overhead, bearerToken, hand]);
        runs.plain.push(t.plain);
        runs.tw.push(t.tw);
        runs.hand.push(t.hand);
      }
      return { plain: median(runs.plain), tw: median(runs.tw), hand: median(runs.hand) };
    };
    const bearer = await measure(bearerPage, false);
    const dpop = await measure(dpopPage, true);
    const us = (x) => `${((x / N.overhead) * 1000).toFixed(0)} µs`;
    const ratio = (m, base = m.plain) => [`**${(m.tw / base).toFixed(3)}×**`, `**${(((m.tw - base) / N.overhead) * 1000).toFixed(1)} µs**`];
    section("1. Per-request overhead", [
      `${N.overhead} GET /api/me each (token fresh), sequential, interleaved request by request with the order rotating; median of ${N.repeats} runs. Plain \`fetch\` attaches a Bearer token by hand (the token of a \`dpop: false\` session).`,
      "",
      table(["", "total", "per request"], [
        ["plain `fetch` (Bearer attached by hand)", ms(bearer.plain), us(bearer.plain)],
        ["`auth.fetch`, `dpop: false` (Bearer)", ms(bearer.tw), us(bearer.tw)],
        ["**ratio / added**, Bearer vs Bearer (goal ≤ 1.03×)", ...ratio(bearer)],
        ["plain `fetch` (Bearer attached by hand)", ms(dpop.plain), us(dpop.plain)],
        ["`auth.fetch` with DPoP (a proof signed per request, server verifies it)", ms(dpop.tw), us(dpop.tw)],
        ["**ratio / added**, DPoP vs plain fetch (goal ≤ 1.10×)", ...ratio(dpop)],
        ["`fetch` with a DPoP proof made by hand (same key, same server)", ms(dpop.hand), us(dpop.hand)],
        ["ratio / added, hand-made DPoP vs plain fetch: what DPoP itself costs here", ...ratio({ tw: dpop.hand }, dpop.plain)],
        ["ratio / added, `auth.fetch` with DPoP vs hand-made DPoP: tokenwarden's share", ...ratio(dpop, dpop.hand)],
      ]),
      "",
      "For scale: the wasm side of `auth.fetch` (token check, header, promise plumbing) measures about 5 µs (`getAccessToken()` in a loop); a sequential same-origin `fetch` costs several milliseconds in this headless Chromium, and varies by ±30 % between runs. With DPoP each request adds a WebCrypto signature (Ed25519 where the browser has it, as this Chromium does; else ECDSA P-256) and a SHA-256 in the page and a signature verification on the server; the hand-made row pays exactly those, with none of tokenwarden's work (no origin check, no expiry check, no nonce or clock bookkeeping); tokenwarden hashes each token once for `ath` (kept for the requests after it), the hand-made request on every request.",
    ].join("\n"));
    await context.close();
    await context2.close();
  }

  // 2 & 3. Refresh storms, tokenwarden, real client-side expiry --------------------------------
  async function twStorm(tabs) {
    const trials = [];
    for (let r = 0; r < N.repeats; r++) {
      const context = await browser.newContext();
      const pages = [];
      for (let i = 0; i < tabs; i++) pages.push(await openPage(context, `${B.base}/?peer=tokenwarden`));
      const [email, password] = await B.newUser();
      await pages[0].evaluate(([e, p]) => peer.login(e, p), [email, password]);
      for (const p of pages.slice(1)) await p.waitForFunction(() => auth.isAuthenticated);
      const per = Math.ceil(N.storm / tabs);
      // Baseline: the same burst with a fresh token.
      const fresh = (await Promise.all(pages.map((p) => p.evaluate((n) => burst(n), per))));
      await sleep(2_200); // every tab's token is now due
      await B.hook("POST", "/test/reset");
      const storm = await Promise.all(pages.map((p) => p.evaluate((n) => burst(n), per)));
      const stats = await B.hook("GET", "/test/stats");
      const logouts = (await Promise.all(pages.map((p) => p.evaluate(() => peer.logouts())))).reduce((a, b) => a + b, 0);
      const statuses = storm.flatMap((s) => s.statuses);
      trials.push({
        refreshes: stats.refresh_calls,
        reuse: stats.reuse_detections,
        failures: statuses.filter((s) => s !== 200).length,
        logouts,
        p50: pct(storm.flatMap((s) => s.latencies), 50),
        p99: pct(storm.flatMap((s) => s.latencies), 99),
        freshP50: pct(fresh.flatMap((s) => s.latencies), 50),
        freshP99: pct(fresh.flatMap((s) => s.latencies), 99),
      });
      await context.close();
    }
    const m = (k) => median(trials.map((t) => t[k]));
    const max = (k) => Math.max(...trials.map((t) => t[k]));
    return table(["", "at expiry", "fresh token"], [
      ["refresh requests (median / max)", `${m("refreshes")} / ${max("refreshes")}`, "0"],
      ["reuse detections (max)", `${max("reuse")}`, "0"],
      ["failed requests (max)", `${max("failures")}`, "0"],
      ["spurious logouts (max)", `${max("logouts")}`, "0"],
      ["latency p50", ms(m("p50")), ms(m("freshP50"))],
      ["latency p99", ms(m("p99")), ms(m("freshP99"))],
    ]) + `\n\n${N.storm} concurrent \`auth.fetch\` at the moment the token is due, in ${tabs} tab(s); median of ${N.repeats} trials (fresh session each).`;
  }
  if (want(2)) section("2. Refresh storm in one tab", await twStorm(1));
  if (want(3)) section(`3. Refresh storm across ${N.stormTabs} tabs (one BrowserContext)`, await twStorm(N.stormTabs));

  // 4. Bundle size ---------------------------------------------------------------------------------
  if (want(4)) {
    const entries = {
      "tokenwarden (this build)": null,
      "oidc-client-ts": `export * from "oidc-client-ts";`,
      "supertokens-website": `export { default } from "supertokens-website";`,
      "@auth0/auth0-spa-js": `export * from "@auth0/auth0-spa-js";`,
      "axios + axios-auth-refresh": `export { default as axios } from "axios"; export { default as refresh } from "axios-auth-refresh";`,
    };
    const rows = [];
    for (const [name, source] of Object.entries(entries)) {
      if (source === null) {
        const wasm = readFileSync(path.join(root, "pkg/tokenwarden_bg.wasm"));
        const driver = (await esbuild.build({
          entryPoints: [path.join(root, "pkg/tokenwarden.js")], bundle: true, minify: true,
          format: "esm", write: false, logLevel: "silent",
        })).outputFiles[0].contents;
        rows.push([`**${name}**: .wasm + JS`, kb(wasm.length + driver.length), `**${kb(gz(wasm) + gz(driver))}** (${gz(wasm) + gz(driver)} B)`,
          `wasm ${kb(gz(wasm))} + JS driver ${kb(gz(driver))}`]);
        continue;
      }
      const bundle = (await esbuild.build({
        stdin: { contents: source, resolveDir: here, loader: "js" }, bundle: true, minify: true,
        format: "esm", platform: "browser", write: false, logLevel: "silent",
      })).outputFiles[0].contents;
      rows.push([name, kb(bundle.length), `${kb(gz(bundle))} (${gz(bundle)} B)`, ""]);
    }
    // The framework bindings, hand-written: as shipped, and minified (the frameworks not counted).
    const bindings = [
      ["react", "React", ["react"]],
      ["angular", "Angular", ["@angular/core", "rxjs"]],
      ["vue", "Vue", ["vue"]],
      ["svelte", "Svelte", ["svelte/reactivity"]],
    ];
    for (const [i, [file, framework, external]] of bindings.entries()) {
      const src = readFileSync(path.join(root, `pkg/${file}.js`));
      const min = (await esbuild.build({
        entryPoints: [path.join(root, `pkg/${file}.js`)], bundle: true, minify: true, format: "esm",
        external, write: false, logLevel: "silent",
      })).outputFiles[0].contents;
      rows.splice(1 + i, 0, [`**tokenwarden/${file}** (pkg/${file}.js, ${framework} not counted)`, `${src.length} B`,
        `**${gz(src)} B**`, `minified: ${min.length} B, ${gz(min)} B gzip`]);
    }
    section("4. Bundle size", table(["", "raw (minified)", "gzip -9", ""], rows) +
      "\n\nEach peer's main browser entry bundled with `esbuild --bundle --minify`, then gzip -9; tokenwarden's JS (the driver, which also instantiates the .wasm) is bundled and minified the same way. Target: ≤ 16 KB (see docs/SIZE.md).");
  }

  // 5. Start-up -------------------------------------------------------------------------------------
  if (want(5)) {
    const context = await browser.newContext();
    const page = await context.newPage();
    const samples = [];
    for (let i = 0; i < N.startup; i++) {
      await page.goto(`${A.base}/startup.html`);
      await page.waitForFunction(() => window.startup);
      samples.push(await page.evaluate(() => window.startup));
    }
    const m = (k) => median(samples.map((s) => s[k]));
    section("5. Start-up", table(["measured", "import glue", "fetch + compile + instantiate", "`new TokenManager`", "**total**"], [
      ["page load", ms(m("import")), ms(m("instantiate")), ms(m("construct")), `**${ms(m("total"))}**`],
      [".wasm bytes in memory", "–", `${ms(m("compile"))} compile + instantiate`, "", `**${ms(m("fromBytes"))}**`],
    ]) + `\n\nMedian of ${N.startup} page loads. "page load" starts at the first byte of the page's module and includes HTTP revalidation of the glue and the .wasm (the server sends no-cache); ".wasm bytes in memory" is compile + instantiate (\`WebAssembly.compile\` + \`initSync\`) + construct with the bytes already fetched. Target: ≤ 5 ms for import + instantiate + construct.`);
    await context.close();
  }

  // 6. Peers on the same storms ------------------------------------------------------------------
  if (want(6)) {
    await esbuild.build({
      entryPoints: {
        naive: path.join(here, "peers/naive.js"),
        aar: path.join(here, "peers/aar.js"),
        "aar-best": path.join(here, "peers/aar-best.js"),
      },
      bundle: true, minify: true, format: "esm", outdir: path.join(here, "site/dist"), logLevel: "silent",
    });
    // Everyone holds a token the server now considers expired (its clock moves past exp), so
    // every contender learns it from a 401 the same way.
    const rows = [];
    const contenders = [
      ["naive", "naive interceptor"],
      ["aar", "axios + axios-auth-refresh (README defaults)"],
      ["aar-best", "axios + axios-auth-refresh (`deduplicateRefresh: false`)"],
      ["tokenwarden", "tokenwarden"],
    ];
    for (const [peer, label] of contenders) {
      for (const tabs of [1, N.stormTabs]) {
        const trials = [];
        for (let r = 0; r < N.repeats; r++) {
          const context = await browser.newContext();
          const pages = [];
          for (let i = 0; i < tabs; i++) pages.push(await openPage(context, `${A.base}/?peer=${peer}`));
          await A.hook("POST", "/test/reset");
          const [email, password] = await A.newUser();
          for (const p of pages) await p.evaluate(([e, pw]) => peer.login(e, pw), [email, password]);
          await A.hook("POST", "/test/reset");
          await A.hook("POST", "/test/clock", { advance_secs: 606 });
          const per = Math.ceil(N.storm / tabs);
          const res = await Promise.all(pages.map((p) => p.evaluate((n) => burst(n), per)));
          const stats = await A.hook("GET", "/test/stats");
          const statuses = res.flatMap((x) => x.statuses);
          const logouts = (await Promise.all(pages.map((p) => p.evaluate(() => peer.logouts())))).reduce((a, b) => a + b, 0);
          trials.push({
            refreshes: stats.refresh_calls, reuse: stats.reuse_detections,
            failures: statuses.filter((s) => s !== 200).length, logouts,
            p99: pct(res.flatMap((x) => x.latencies), 99),
          });
          await context.close();
        }
        const m = (k) => median(trials.map((t) => t[k]));
        rows.push([label, `${tabs}`, `${m("refreshes")}`, `${m("reuse")}`, `${m("failures")}`, `${m("logouts")}`, ms(m("p99"))]);
      }
    }
    await A.hook("POST", "/test/reset");
    section("6. Peers on the same storms", table(
      ["contender", "tabs", "refresh requests", "reuse detections", "failed requests", "logouts", "p99"], rows) +
      `\n\n${N.storm} concurrent GETs per storm (split across the tabs) right after the server's clock moves past the access token's exp; medians of ${N.repeats} trials. The reference server accepts repeated presentations of one refresh token for 30 s (up to 32 children: tabs without a shared lock), which is kinder to the peers than most servers: a reuse detection here is a real rotation race, and a 429 is the cap on children. Read the p99 column with the failures beside it: the peers' requests mostly fail fast, while tokenwarden's 1000 all succeed, each after a 401 and a replay (with a real expiry its own clock avoids the 401s: sections 2 and 3).`);
  }

  // 7. Server ------------------------------------------------------------------------------------
  if (want(7)) {
    const [email, password] = await A.newUser();
    const login = async () => {
      const res = await fetch(`${A.base}/auth/login`, {
        method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ email, password }),
      });
      if (!res.ok) throw new Error(`login: ${res.status}`);
      const refresh = res.headers.getSetCookie().find((c) => c.startsWith("__Host-tw_refresh="));
      return { token: (await res.json()).access_token, refresh: refresh.split(";")[0].split("=")[1] };
    };
    const token = (await login()).token;
    // Refresh as real clients do: every token is presented once, and the child from the
    // response is the next one presented. Each wrk thread keeps a queue of unused tokens,
    // takes one per request and queues the child it gets back. 96 sessions for 64 connections.
    const sessions = 96;
    const refreshScript = async () => {
      const tokens = [];
      for (let i = 0; i < sessions; i++) tokens.push((await login()).refresh);
      const lua = path.join(mkdtempSync(path.join(tmpdir(), "twwrk-")), "refresh.lua");
      writeFileSync(lua, `local tokens = { ${tokens.map((t) => `"${t}"`).join(", ")} }
local threads = 0
function setup(thread) thread:set("id", threads); threads = threads + 1 end
function init(args)
  queue, head, tail = {}, 1, 0
  for i = id + 1, #tokens, 2 do tail = tail + 1; queue[tail] = tokens[i] end
end
function request()
  local t = "none"
  if head <= tail then t = queue[head]; queue[head] = nil; head = head + 1 end
  return wrk.format("POST", nil, { ["X-Tokenwarden"] = "1", ["Cookie"] = "__Host-tw_refresh=" .. t })
end
function response(status, headers, body)
  -- wrk keeps the last header of a name; the server sends the refresh cookie last.
  local c = headers["set-cookie"] or headers["Set-Cookie"]
  local t = status == 200 and c and c:match("^__Host%-tw_refresh=([^;]+)")
  if t then tail = tail + 1; queue[tail] = t end
end
`);
      return lua;
    };
    const wrk = async (args) => {
      const runs = [];
      for (let i = 0; i < N.wrkRuns; i++) {
        const run = typeof args === "function" ? await args() : args;
        // Asynchronously: a blocked event loop would keep idle keep-alive sockets that the
        // server has closed meanwhile (its header-read timeout), and the next fetch would fail.
        const { stdout: text } = await execFileAsync("wrk", ["-t2", "-c64", `-d${N.wrkSecs}s`, "--latency", ...run], { encoding: "utf8" });
        const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(text)[1]);
        const p99 = /99%\s+([\d.]+)(us|ms|s)/.exec(text);
        const p99ms = Number(p99[1]) * { us: 0.001, ms: 1, s: 1000 }[p99[2]];
        const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(text)?.[1] ?? 0);
        runs.push({ rps, p99ms, non2xx });
      }
      return { rps: median(runs.map((r) => r.rps)), p99: median(runs.map((r) => r.p99ms)), non2xx: Math.max(...runs.map((r) => r.non2xx)) };
    };
    const me = await wrk(["-H", `Authorization: Bearer ${token}`, `${A.base}/api/me`]);
    // Fresh sessions for every run: a token is never presented twice, across runs either.
    const refresh = await wrk(async () => ["-s", await refreshScript(), `${A.base}/auth/refresh`]);
    // DPoP: tokenwarden-load logs in with a proof (a bound session), pre-signs one proof per
    // request (fresh jti, current nonce, ath) before the clock starts, then drives 64
    // keep-alive connections; it also reads the server's CPU time from /proc.
    const load = (extra) => {
      const runs = [];
      for (let i = 0; i < N.wrkRuns; i++) {
        const [e, p] = [email, password];
        const text = execFileSync(LOAD, [
          "--base", A.base, "--email", e, "--password", p, "--connections", "64",
          "--secs", String(N.wrkSecs), "--server-pid", String(A.pid), ...extra,
        ], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] });
        runs.push(JSON.parse(text.trim().split("\n").pop()));
      }
      const med = (k) => median(runs.map((r) => r[k]));
      return { rps: med("rps"), p99: med("p99_ms"), non2xx: Math.max(...runs.map((r) => r.non2xx)), cpu: med("server_cpu_us_per_request") };
    };
    const dpop = load(SMOKE ? ["--proofs-per-sec", "3000"] : []);
    const es256 = load(SMOKE ? ["--proofs-per-sec", "3000", "--es256"] : ["--es256"]);
    const bearer = load(["--bearer"]);
    const crypto = JSON.parse(execFileSync(LOAD, ["--crypto"], { encoding: "utf8" }).trim());
    const load1 = Number(readFileSync("/proc/loadavg", "utf8").split(" ")[0]);
    section("7. Server", table(["endpoint", "requests/s", "p99", "non-2xx", "server CPU / request", "target"], [
      ["`GET /api/me`, Bearer (EdDSA verification + SQLite read), wrk", `**${Math.round(me.rps)}**`, ms(me.p99), `${me.non2xx}`, "", "≥ 10 000/s"],
      ["`GET /api/me`, Bearer, tokenwarden-load", `${Math.round(bearer.rps)}`, ms(bearer.p99), `${bearer.non2xx}`, `${Math.round(bearer.cpu)} µs`, ""],
      ["`GET /api/me`, **DPoP** (+ EdDSA proof, nonce, replay cache), tokenwarden-load", `**${Math.round(dpop.rps)}**`, ms(dpop.p99), `${dpop.non2xx}`, `${Math.round(dpop.cpu)} µs`, "≥ 15 000/s"],
      ["`GET /api/me`, DPoP with ES256 proofs (browsers without Ed25519), tokenwarden-load", `${Math.round(es256.rps)}`, ms(es256.p99), `${es256.non2xx}`, `${Math.round(es256.cpu)} µs`, ""],
      ["`POST /auth/refresh` (rotation: SQLite write + signing)", `**${Math.round(refresh.rps)}**`, ms(refresh.p99), `${refresh.non2xx}`, "", "≥ 1 500/s"],
    ]) + `\n\nwrk -t2 -c64 and tokenwarden-load (bench/load, 64 keep-alive connections, proofs pre-signed before the clock starts), ${N.wrkSecs} s, median of ${N.wrkRuns} runs, release build, SQLite file in WAL mode, on the same ${cpus().length} cores as the load generator (1-minute load average ${load1} when this section ended: other work on the machine lowers every figure; "server CPU / request" is the server's user + system time from /proc divided by the requests served). Proofs are EdDSA (Ed25519), as the client signs them where the browser's WebCrypto has Ed25519 (every engine of section 9), ES256 in the row that says so. One signature verification costs ${crypto.eddsa.signature_us.toFixed(0)} µs here for Ed25519 and ${crypto.es256.signature_us.toFixed(0)} µs for ES256 (ES256 with ring, Ed25519 with ed25519-dalek's strict check, as the access tokens are, and the small-order checks of docs/PROTOCOL.md); a whole proof check ${crypto.eddsa.verify_us.toFixed(0)} µs and ${crypto.es256.verify_us.toFixed(0)} µs. Access-token signatures are verified once per token and remembered (kid still live; exp, deny-list, session and the proof checked on every request). Every refresh presents a token once and the next presents the child it returned, as a real client does (${sessions} sessions shared by the 64 connections, fresh for every run): each one claims its generation, writes a child token and signs a JWT. The per-client and per-session refresh limits are raised for this run (all load comes from one address).`);
  }

  // 8. The refresh storm in each engine ------------------------------------------------------------
  if (want(8)) {
    // Through each engine's WebDriver (tests/engines/webdriver.mjs), over HTTPS (WebKit keeps no
    // Secure cookie over http); 10-second tokens, so no storm outlasts the fresh token.
    const engines = SMOKE ? ["chromium"] : ["chromium", "firefox", "webkit"];
    const dir = scratch("bench");
    const tls = certificate(dir);
    const server = await new Server({ tls, ttl: 10, db: "sqlite::memory:", binary: SERVER }).start();
    const rows = [];
    try {
      for (const engine of engines) {
        const b = await Browser.start(engine);
        const trials = [];
        try {
          for (let r = 0; r < N.repeats; r++) {
            const tabs = [];
            for (let i = 0; i < N.stormTabs; i++) {
              const t = await b.open(`${server.base}/`);
              await t.call("setup", {});
              tabs.push(t);
            }
            await tabs[0].call("login", await server.newUser());
            for (const t of tabs.slice(1)) if (!(await t.call("state")).isAuthenticated) await t.call("restore");
            await sleep(5_200); // every tab's token is now due
            await server.reset();
            const at = Date.now() + 300 + 100 * tabs.length;
            for (const t of tabs) await t.call("burstAt", Math.ceil(N.storm / tabs.length), at);
            const results = [];
            for (const t of tabs) results.push(...(await t.call("collect")));
            const stats = await server.stats();
            let logouts = 0;
            for (const t of tabs) logouts += (await t.call("state")).events.filter((e) => e === "sessionExpired" || e === "logout").length;
            const latencies = results.map(([, ms]) => ms);
            trials.push({
              refreshes: stats.refresh_calls, reuse: stats.reuse_detections,
              failures: results.filter(([s]) => s !== 200).length, logouts,
              p50: pct(latencies, 50), p99: pct(latencies, 99),
            });
            await b.closeAll();
          }
        } finally {
          await b.stop();
        }
        const m = (k) => median(trials.map((t) => t[k]));
        const max = (k) => Math.max(...trials.map((t) => t[k]));
        rows.push([b.version, `${m("refreshes")} / ${max("refreshes")}`, `${max("reuse")}`, `${max("failures")}`,
          `${max("logouts")}`, ms(m("p50")), ms(m("p99"))]);
      }
    } finally {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    }
    section("8. The refresh storm in each engine", table(
      ["engine", "refresh requests (median / max)", "reuse detections (max)", "failed requests (max)", "logouts (max)", "latency p50", "latency p99"], rows) +
      `\n\n${N.storm} concurrent \`auth.fetch\` at the moment the token is due, across ${N.stormTabs} windows of one browser (shared cookies, Web Locks and BroadcastChannel), each engine through its own WebDriver, over HTTPS (the server's TLS listener, a self-signed certificate); median of ${N.repeats} trials. Latency is measured in the page from the moment the burst starts.`);
  }

  // 9. DPoP proof creation -----------------------------------------------------------------------
  if (want(9)) {
    // oauth4webapi's ESM build, bundled and minified as the peers of section 6 are.
    await esbuild.build({
      stdin: { contents: `export * from "oauth4webapi";`, resolveDir: here, loader: "js" },
      bundle: true, minify: true, format: "esm", platform: "browser",
      outfile: path.join(here, "site/dist/oauth4webapi.js"), logLevel: "silent",
    });
    // auth0-spa-js's too, for its DPoP fetcher (the ES256 table below).
    await esbuild.build({
      stdin: { contents: `export { Auth0Client } from "@auth0/auth0-spa-js";`, resolveDir: here, loader: "js" },
      bundle: true, minify: true, format: "esm", platform: "browser",
      outfile: path.join(here, "site/dist/auth0.js"), logLevel: "silent",
    });
    const pkgVersion = (p) => JSON.parse(readFileSync(path.join(here, "node_modules", p, "package.json"), "utf8")).version;
    const o4wVersion = pkgVersion("oauth4webapi"), auth0Version = pkgVersion("@auth0/auth0-spa-js");
    // One page's figures: after a warm-up, N.proofRuns runs interleaved in chunks of
    // N.proofChunk, the order rotating chunk by chunk, so that the machine's drift hits every
    // kind alike (each run totals N.proofs of each); then one checked request of each library.
    async function measure(page, kinds) {
      await page.evaluate(([ks, n]) => run(ks, n, n), [kinds, N.proofWarmup]);
      const runs = Object.fromEntries(kinds.map((k) => [k, []]));
      for (let r = 0; r < N.proofRuns; r++) {
        const t = await page.evaluate(([ks, n, c]) => run(ks, n, c), [kinds, N.proofs, N.proofChunk]);
        for (const k of kinds) runs[k].push(t[k]);
      }
      return { runs, after: await page.evaluate(() => verify()) };
    }
    // One page (site/proof.js) holds both: it logs tokenwarden in against the real server, then
    // answers GET /api/me with an empty 200 from a fetch stub installed before the TokenManager
    // was constructed, and checks one request of each library (Authorization: DPoP, a proof with
    // htm, htu, ath, iat, jti that verifies under its jwk) before and after the timing.
    const context = await browser.newContext();
    const page = await openPage(context, `${A.base}/proof.html`);
    await page.evaluate((user) => setup(...user), await A.newUser());
    const kinds = ["tokenwarden", "oauth4webapi", "webcrypto"];
    if (await page.evaluate(() => window.hasEd25519 === true)) kinds.push("ed25519");
    const { runs, after } = await measure(page, kinds);
    // EdDSA where the browser's WebCrypto has Ed25519, else ES256: its floor is tokenwarden's.
    const alg = await page.evaluate(() => window.proofAlg);
    const floor = alg === "EdDSA" ? "ed25519" : "webcrypto";
    await context.close();
    const load1 = Number(readFileSync("/proc/loadavg", "utf8").split(" ")[0]);
    // Per request (µs, the median run's) and the runs' spread, of one page's runs.
    const figures = (rs) => ({
      per: (k) => (median(rs[k]) / N.proofs) * 1000,
      spread: (k) => `${((Math.min(...rs[k]) / N.proofs) * 1000).toFixed(0)}–${((Math.max(...rs[k]) / N.proofs) * 1000).toFixed(0)} µs`,
    });
    const { per, spread } = figures(runs);
    const us = (x) => `${x.toFixed(0)} µs`;
    // Issue 23: the same floor, ES256 against Ed25519, in each engine through its WebDriver
    // (tests/engines/webdriver.mjs), on the same page and server (http://127.0.0.1 is a secure
    // context in all three): setup() logs in and makes the keys, run() interleaves the floors.
    async function floors(engine) {
      const b = await Browser.start(engine);
      try {
        const sync = (script) => b.cmd("POST", "/execute/sync", { script, args: [] });
        // The page's `fn(...args)`, awaited in the page; its result or error crosses as JSON.
        const call = async (fn, ...args) => {
          const { value, error } = JSON.parse(await b.cmd("POST", "/execute/async", {
            script: `const [fn, args, done] = arguments;
              window[fn](...args).then((value) => done(JSON.stringify({ value })), (e) => done(JSON.stringify({ error: String(e) })));`,
            args: [fn, args],
          }, 200_000));
          if (error !== undefined) throw new Error(`${engine} ${fn}: ${error}`);
          return value;
        };
        await b.cmd("POST", "/url", { url: `${A.base}/proof.html` });
        for (let i = 0; !(await sync("return window.ready === true")); i++) {
          if (i > 200) throw new Error(`${engine}: proof.html did not load`);
          await sleep(50);
        }
        await call("setup", ...(await A.newUser()));
        const ed = await sync("return window.hasEd25519 === true");
        const kinds = ed ? ["webcrypto", "ed25519"] : ["webcrypto"];
        await call("run", kinds, N.proofWarmup, N.proofWarmup);
        const runs = [];
        for (let r = 0; r < N.proofRuns; r++) runs.push(await call("run", kinds, N.proofs, N.proofChunk));
        const per = (k) => (median(runs.map((t) => t[k])) / N.proofs) * 1000;
        return [b.version, us(per("webcrypto")), ed ? us(per("ed25519")) : "not in its WebCrypto",
          ed ? `**${median(runs.map((t) => t.ed25519 / t.webcrypto)).toFixed(2)}×**` : ""];
      } finally {
        await b.stop();
      }
    }
    // Issue 23: auth0-spa-js's DPoP code beside the others, with the key type it has (ES256):
    // a second page on which tokenwarden falls back to ES256 (its `generateKey` refuses
    // Ed25519 there), oauth4webapi given an ES256 key too; interleaved the same way.
    const es = await (async () => {
      const context = await browser.newContext();
      try {
        const page = await openPage(context, `${A.base}/proof.html?es256`);
        await page.evaluate((user) => setup(...user), await A.newUser());
        const m = await measure(page, ["tokenwarden", "oauth4webapi", "auth0", "webcrypto"]);
        for (const k of ["tokenwarden", "oauth4webapi", "auth0"]) {
          if (m.after[k].alg !== "ES256") throw new Error(`section 9, ES256 page: ${k} signed ${m.after[k].alg}`);
        }
        return m;
      } finally {
        await context.close();
      }
    })();
    const { per: esPer, spread: esSpread } = figures(es.runs);
    const esRatio = (k) => {
      const r = es.runs.tokenwarden.map((t, i) => t / es.runs[k][i]);
      return `**${(esPer("tokenwarden") / esPer(k)).toFixed(2)}×** (runs ${Math.min(...r).toFixed(2)}–${Math.max(...r).toFixed(2)}×)`;
    };
    const engineFloors = [];
    for (const engine of SMOKE ? ["chromium"] : ["chromium", "firefox", "webkit"]) engineFloors.push(await floors(engine));
    const claims = (c) => c.claims.join(", ");
    const ratios = runs.tokenwarden.map((t, i) => t / runs.oauth4webapi[i]);
    const share = (k) => Math.round((100 * per(floor)) / per(k));
    section("9. DPoP proof creation", table(["", "per request (median)", "runs (min–max)", "above the floor"], [
      ["`auth.fetch(\"/api/me\")`, tokenwarden, `dpop: true`", `**${us(per("tokenwarden"))}**`, spread("tokenwarden"), us(per("tokenwarden") - per(floor))],
      [`\`protectedResourceRequest\`, oauth4webapi ${o4wVersion} (\`DPoP\` handle)`, `**${us(per("oauth4webapi"))}**`, spread("oauth4webapi"), us(per("oauth4webapi") - per(floor))],
      ["**ratio** tokenwarden / oauth4webapi", `**${(per("tokenwarden") / per("oauth4webapi")).toFixed(2)}×**`, `${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)}×`, ""],
      ["floor: bare `crypto.subtle.digest` (SHA-256) + `sign` (ES256)", us(per("webcrypto")), spread("webcrypto"), ""],
      ...(runs.ed25519 ? [["the same floor with an Ed25519 key (EdDSA proofs)", us(per("ed25519")), spread("ed25519"),
        `${(per("ed25519") / per("webcrypto")).toFixed(2)}× ES256's`]] : [["Ed25519", "not in this browser's WebCrypto", "", ""]]),
    ]) + `\n\nThe client-side cost of one \`GET /api/me\` (the page's own origin, http://127.0.0.1) with an access token and a DPoP proof (RFC 9449), the network aside: ${N.proofs} sequential requests of each per run, interleaved in chunks of ${N.proofChunk} with the order rotating chunk by chunk, after ${N.proofWarmup} of each to warm up; median of ${N.proofRuns} runs (the ratio's range is over the runs' own ratios), in one headless Chromium page, each chunk timed with \`performance.now()\` around its loop. Both libraries send to the same \`fetch\` stub, installed before tokenwarden's \`TokenManager\` was constructed (the driver takes \`fetch\` then) and passed to oauth4webapi as its \`customFetch\`: it answers \`/api/me\` at once with \`new Response(null, {status: 200})\`; before the timing it let the login and one real \`/api/me\` through to the reference server, which accepted tokenwarden's proof. Same token, same URL, same server nonce (handed to oauth4webapi through one \`DPoP-Nonce\` response header); both keys are non-extractable ${alg === "EdDSA" ? "Ed25519" : "ECDSA P-256"} WebCrypto keys (tokenwarden's proofs are ${alg} here: EdDSA where the browser's WebCrypto has Ed25519, else ES256; oauth4webapi was given a key of the same kind), and "above the floor" is over that kind's floor. Checked before and after the timing: each request carried \`Authorization: DPoP <token>\` and a proof whose signature verifies under its header's jwk, with the claims ${claims(after.tokenwarden)} (tokenwarden, ${after.tokenwarden.bytes} bytes) and ${claims(after.oauth4webapi)} (oauth4webapi, ${after.oauth4webapi.bytes} bytes).\n\nWhat each figure includes. tokenwarden: \`auth.fetch\` resolving the URL and checking its origin, the token check in the wasm core, the proof (random jti; SHA-256 of the token for ath, once per token and kept for the requests after it, where oauth4webapi hashes it for every proof; JSON and base64url of the claims, the signature), the headers, the stub's response handed back to the core (its DPoP-Nonce and Date, absent here, and its status). oauth4webapi: \`new URL\` and \`new Headers\` by the caller, the proof (the same steps, with a 32-byte jti where tokenwarden's is 16 bytes; its JWS header is JSON- and base64url-encoded on every proof, tokenwarden's once per key), the Authorization header, the headers copied into a plain object for \`fetch\`, and its response checks (nonce cache, WWW-Authenticate). The floor is the two WebCrypto calls each proof makes, awaited in turn, with their inputs encoded beforehand. The floor is ${share("tokenwarden")} % of tokenwarden's figure and ${share("oauth4webapi")} % of oauth4webapi's: each WebCrypto call runs off the main thread and its promise resolves through the page's task queue, so it waits for whatever else the machine runs (1-minute load average ${load1} on ${cpus().length} cores when this section ended); other work on the machine lengthens every figure, unevenly from run to run, and the interleaving is there so that it lengthens all three alike.${runs.ed25519 ? `\n\nEd25519 against ES256 (issue 23): the same two WebCrypto calls with a non-extractable Ed25519 key, interleaved with the others. ${per("ed25519") < per("webcrypto") ? "Ed25519 is the faster here" : "ES256 is the faster here"}; tokenwarden signed with ${alg === "EdDSA" ? "Ed25519" : "ES256"}.` : ""}\n\n` +
      `With ES256 keys for all three, auth0-spa-js ${auth0Version} beside them (it makes ES256 keys only), on a second page of the same Chromium:\n\n` +
      table(["ES256 keys", "per request (median)", "runs (min–max)", "above the floor", "tokenwarden / this"], [
        ["`auth.fetch(\"/api/me\")`, tokenwarden, `dpop: true`, its ES256 fallback", `**${us(esPer("tokenwarden"))}**`, esSpread("tokenwarden"), us(esPer("tokenwarden") - esPer("webcrypto")), ""],
        [`\`protectedResourceRequest\`, oauth4webapi ${o4wVersion}`, `**${us(esPer("oauth4webapi"))}**`, esSpread("oauth4webapi"), us(esPer("oauth4webapi") - esPer("webcrypto")), esRatio("oauth4webapi")],
        [`\`createFetcher(…).fetchWithAuth\`, @auth0/auth0-spa-js ${auth0Version}, \`useDpop: true\``, `**${us(esPer("auth0"))}**`, esSpread("auth0"), us(esPer("auth0") - esPer("webcrypto")), esRatio("auth0")],
        ["floor: bare `crypto.subtle.digest` (SHA-256) + `sign` (ES256)", us(esPer("webcrypto")), esSpread("webcrypto"), "", ""],
      ]) +
      `\n\nThe same measurement as above (${N.proofs} requests of each per run, interleaved, median of ${N.proofRuns} runs), on \`proof.html?es256\`, where \`SubtleCrypto.prototype.generateKey\` refuses Ed25519 before tokenwarden loads, so that it makes the ES256 key a browser without Ed25519 gets. auth0-spa-js: an \`Auth0Client\` with \`useDpop: true\` and its \`createFetcher({ dpopNonceId, getAccessToken, fetch })\`, \`getAccessToken\` resolving the same token, \`fetch\` the same stub's answer (it is handed a \`Request\`); it learnt the server's nonce from one \`DPoP-Nonce\` response as oauth4webapi did. Per request it builds a \`Request\`, reads its key pair and the nonce from its IndexedDB, and makes the proof with panva's \`dpop\` (the token hashed for \`ath\` each time); its proofs carry ${claims(es.after.auth0)} (${es.after.auth0.bytes} bytes) and verify under their jwk, checked before and after the timing as the others'.\n\n` +
      table(["engine", "floor per proof, ES256", "floor per proof, Ed25519", "ratio Ed25519 / ES256"], engineFloors) +
      `\n\nThe floor alone (SHA-256 + sign, non-extractable keys, inputs encoded beforehand, calls awaited in turn) with each key, in each engine through its WebDriver, on the same page and server: ${N.proofs} of each per run, interleaved as above after ${N.proofWarmup} of each to warm up; median of ${N.proofRuns} runs (the ratio is the median of the runs' own ratios).`);
  }
} finally {
  A.stop();
  B.stop();
  await browser.close();
}

// 10. The server on PostgreSQL, one and three instances, beside SQLite (bench/fleet.mjs; after
// servers A and B have stopped, so that only the instances measured share the cores).
if (want(10)) {
  const { fleetBench } = await import("./fleet.mjs");
  const { title, body } = await fleetBench({ server: SERVER, load: LOAD, smoke: SMOKE });
  section(title, body);
}

// 11. Bringing users in: `users import` and sign-in per hash kind (bench/accounts.mjs).
if (want(11)) {
  const { accountsBench } = await import("./accounts.mjs");
  const port = Number(process.env.TW_BENCH_PORT ?? 18380) + 20;
  const { title, body } = await accountsBench({ server: SERVER, smoke: SMOKE, port });
  section(title, body);
}

// 12. How soon other services refuse a revoked token (bench/revocation.mjs).
if (want(12)) {
  const { revocationBench } = await import("./revocation.mjs");
  const axum = process.env.TW_BENCH_AXUM ?? path.join(root, "target/release/tokenwarden-example-axum");
  const { title, body } = await revocationBench({ server: SERVER, axum, smoke: SMOKE });
  section(title, body);
}

// 13. Verifying a DPoP-bound request in a Node API, beside jose and express-oauth2-jwt-bearer
// (bench/verify.mjs, its own process: one core).
if (want(13)) {
  const n = SMOKE ? 1000 : 20000;
  const { stdout } = await promisify(execFile)("node", [path.join(here, "verify.mjs"), String(n)], { cwd: root });
  const rows = stdout
    .split("\n")
    .map((l) => l.match(/^(.+?)\s+(\d+) \/s\s+([\d.]+) µs$/))
    .filter(Boolean)
    .map(([, name, perSec, us]) => [name.trim(), perSec, `${us} µs`]);
  section("13. Verifying a request in a Node API", table(["", "verifications/s (one core)", "each"], rows) +
    `\n\n${n} requests per line after 200 to warm up, in one Node process (${process.version}); tokens and proofs made before each loop; the auth server's JWKS handed over once (no network). tokenwarden/verify checks the token, the proof (RFC 9449 §4.3), its nonce and that its jti is new; express-oauth2-jwt-bearer's DPoP mode checks no nonce and keeps no replay cache, jose checks the token alone. Why JavaScript on node:crypto rather than the crate compiled to wasm: the pure-Rust p256 crate in wasm32 took about 950 µs per ES256 verification here, node:crypto 49 µs (ring does not build for wasm32).`);
}

if (pageErrors.length) {
  console.error("page errors:", pageErrors);
  process.exit(1);
}

const version = (cmd, args) => {
  try {
    return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim().split("\n")[0];
  } catch {
    return "?";
  }
};
const header = `# Benchmark results\n\n${SMOKE ? "**Smoke run (tiny sizes): not representative.**\n\n" : ""}` +
  `Measured ${new Date().toISOString().slice(0, 10)} by \`make bench\` (bench/run.mjs) on one machine, one run.\n\n` +
  table(["", ""], [
    ["machine", `${cpus().length} × ${cpus()[0]?.model ?? "?"}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB`],
    ["browser", version("/usr/bin/chromium", ["--version"]).replace(/^.*?(Chromium)/, "$1")],
    ["rustc", version("rustc", ["--version"])],
    ["node", process.version],
    ["peers", "oidc-client-ts 3.5.0, supertokens-website 20.1.6, @auth0/auth0-spa-js 2.27.0, axios 1.21.1 + axios-auth-refresh 5.0.2, oauth4webapi 3.8.8"],
  ]) + "\n\n";
if (ONLY) process.exit(0);
const file = SMOKE ? path.join(root, "target/bench-smoke.md") : path.join(here, "RESULTS.md");
mkdirSync(path.dirname(file), { recursive: true });
writeFileSync(file, header + out.join("\n"));
console.log(`\nwrote ${path.relative(root, file)}`);
