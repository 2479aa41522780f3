// A small W3C WebDriver client for Chromium (chromedriver), Firefox ESR (geckodriver) and
// WebKitGTK (WebKitWebDriver under Xvfb), and the reference servers these tests and the
// benchmarks drive them against (over HTTPS, with a certificate made for the run).
// Raw W3C calls over fetch: nothing to download, every call with a timeout (a WebDriver that
// cannot reach a display or a page hangs silently instead of failing).
import { spawn, execFileSync } from "node:child_process";
import { after, before, describe } from "node:test";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import { randomBytes } from "node:crypto";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { freePort, serverBinary, startServer, stopServer } from "../server-process.mjs";

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A free TCP port on 127.0.0.1. */
export { freePort };

/** A scratch directory under target/ (browser profiles, certificates, databases). */
export function scratch(name) {
  const base = path.join(root, "target", "engines");
  mkdirSync(base, { recursive: true });
  return mkdtempSync(path.join(base, `${name}-`));
}

/** A self-signed certificate for 127.0.0.1 and localhost, valid two days. */
export function certificate(dir) {
  const cert = path.join(dir, "cert.pem");
  const key = path.join(dir, "key.pem");
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", key, "-out", cert,
  ], { stdio: "ignore" });
  return { cert, key, pem: readFileSync(cert) };
}

// ---- the reference server ------------------------------------------------------------------

/** What the test server (built with `--features test-hooks`) requires on every /test/* call. */
const HOOKS_SECRET = process.env.TW_TEST_HOOKS_SECRET ?? "tokenwarden-test-hooks-secret";

/**
 * A tokenwarden-server with test hooks, serving the harness page (tests/e2e/site) and the package
 * (pkg/), over HTTPS with `tls` (`certificate()`), else plain http. `stop()` then `start()`
 * restarts it on the same port and database.
 */
export class Server {
  /** `corsFromSelf`: its pages (on 127.0.0.1) may fetch from its other name (localhost), which
   * answers their CORS requests: another origin, in one process. */
  /** `binary`: by default serverBinary() (TW_SERVER_BINARY, else target/debug's). */
  constructor({ tls, ttl = 4, db, binary = serverBinary(), extra = [], corsFromSelf = false, www = path.join(root, "tests/e2e/site") }) {
    Object.assign(this, { tls, ttl, db, binary, extra, corsFromSelf, www });
    // Signing keys are encrypted at rest (issue 10): one key per server, kept across restarts.
    this.kek = randomBytes(32).toString("base64");
  }

  async start() {
    this.port ??= await freePort();
    const scheme = this.tls ? "https" : "http";
    this.base = `${scheme}://127.0.0.1:${this.port}`;
    const args = [
      "--bind", `127.0.0.1:${this.port}`, "--test-hooks", "--test-hooks-secret", HOOKS_SECRET,
      "--database-url", this.db,
      "--access-ttl-secs", String(this.ttl), "--login-ip-per-minute", "100000",
      "--login-max-failures", "100000", "--login-account-max-failures", "100000",
      ...(this.tls ? ["--tls-cert", this.tls.cert, "--tls-key", this.tls.key] : []),
      "--www-dir", this.www, "--pkg-dir", path.join(root, "pkg"),
      ...(this.corsFromSelf ? ["--allowed-origin", this.base, "--connect-src", this.base.replace("127.0.0.1", "localhost")] : []),
      ...this.extra,
    ];
    this.proc = await startServer(this.binary, args, { TW_KEY_ENCRYPTION_KEY: this.kek },
      async () => (await this.request("GET", "/healthz")).status === 200);
    return this;
  }

  stop() {
    return stopServer(this.proc);
  }

  async restart() {
    await this.stop();
    await this.start();
  }

  /** A request from Node (over HTTPS trusting only this run's certificate). */
  request(method, p, body) {
    return new Promise((resolve, reject) => {
      const data = body === undefined ? undefined : JSON.stringify(body);
      const req = (this.tls ? https : http).request(`${this.base}${p}`, {
        method, ca: this.tls?.pem, timeout: 10_000,
        headers: {
          "x-test-hooks-secret": HOOKS_SECRET,
          ...(data ? { "content-type": "application/json", "content-length": Buffer.byteLength(data) } : {}),
        },
      }, (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (c) => (text += c));
        res.on("end", () => {
          let json = null;
          try { json = JSON.parse(text); } catch {}
          resolve({ status: res.statusCode, json, text });
        });
      });
      req.on("timeout", () => req.destroy(new Error(`${method} ${p}: timeout`)));
      req.on("error", reject);
      req.end(data);
    });
  }

  /** A test hook; throws unless it answered 2xx. */
  async hook(method, p, body) {
    const res = await this.request(method, p, body);
    // The server's own words with it (its log's last lines): a CI run that fails says why.
    if (res.status >= 300) throw new Error(`${method} ${p}: ${res.status} ${res.text}\n${(this.proc?.log ?? "").slice(-2000)}`);
    return res.json;
  }

  stats() { return this.hook("GET", "/test/stats"); }
  reset() { return this.hook("POST", "/test/reset"); }
  faults(f) { return this.hook("POST", "/test/faults", f); }

  async newUser() {
    const email = `engine${Date.now()}-${Math.floor(Math.random() * 1e9)}@example.com`;
    const password = "webdriver-password";
    await this.hook("POST", "/test/users", { email, password, name: "Engine User" });
    return { email, password };
  }
}

// ---- browsers ------------------------------------------------------------------------------

const CHROMIUM_ARGS = [
  "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--no-first-run",
];
const FIREFOX_PREFS = {
  "app.update.enabled": false,
  "browser.safebrowsing.malware.enabled": false,
  "browser.safebrowsing.phishing.enabled": false,
  "datareporting.policy.dataSubmissionEnabled": false,
  "network.captive-portal-service.enabled": false,
  "network.connectivity-service.enabled": false,
  "toolkit.telemetry.enabled": false,
  // WebAuthn through the WebDriver virtual authenticator (tests/engines/passkeys.test.mjs):
  // without these a ceremony is refused at once, or waits for a USB security key.
  "security.webauth.webauthn_enable_softtoken": true,
  "security.webauth.webauthn_enable_usbtoken": false,
};

export const ENGINES = {
  chromium: {
    command: (port) => ["chromedriver", [`--port=${port}`]],
    capabilities: {
      browserName: "chrome",
      "goog:chromeOptions": { binary: "/usr/bin/chromium", args: CHROMIUM_ARGS },
    },
    version: () => execFileSync("/usr/bin/chromium", ["--version"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim(),
  },
  firefox: {
    // geckodriver stays off PATH (see the Makefile): .tools/gecko/bin, installed by setup.sh.
    command: (port) => [path.join(root, ".tools/gecko/bin/geckodriver"), ["--port", String(port)]],
    capabilities: {
      browserName: "firefox",
      "moz:firefoxOptions": { binary: "/usr/bin/firefox-esr", args: ["-headless"], prefs: FIREFOX_PREFS },
    },
    version: () => execFileSync("/usr/bin/firefox-esr", ["--version"], { encoding: "utf8" }).trim(),
  },
  webkit: {
    // No headless mode: a virtual display. Without one, New Session hangs without a word.
    // `-n N -a`: the first free display from N (xvfb-run reads its options in order), N from the
    // driver's port, so that two files starting WebKit at once (make test-engines runs two) do
    // not race for the same one.
    command: (port) => ["xvfb-run", ["-n", String(100 + (port % 5000)), "-a", "WebKitWebDriver", `--port=${port}`]],
    capabilities: {},
    version: () => "WebKitGTK " + execFileSync("dpkg-query", ["-W", "-f=${Version}", "libwebkit2gtk-4.1-0"], { encoding: "utf8" }).trim(),
  },
};

/** For each engine of TW_ENGINES (default all three): a `describe(engine)` whose `tests(engine,
 * browser)` declare its tests; `browser` is the engine's Browser, started before them and stopped
 * after (a stand-in until then, so that the tests can name it when they are declared). */
export function eachEngine(tests) {
  for (const engine of (process.env.TW_ENGINES ?? "chromium,firefox,webkit").split(",").filter(Boolean)) {
    describe(engine, () => {
      let started;
      before(async () => {
        started = await Browser.start(engine);
        console.log(`# ${engine}: ${started.version}`);
      });
      after(async () => {
        await started?.stop();
      });
      tests(engine, new Proxy({}, {
        get: (_, k) => (typeof started?.[k] === "function" ? started[k].bind(started) : started?.[k]),
      }));
    });
  }
}

/** One WebDriver session: one browser profile, whose windows share cookies, locks and channels. */
export class Browser {
  static async start(engine, { startTimeoutMs = 60_000 } = {}) {
    const spec = ENGINES[engine];
    if (!spec) throw new Error(`unknown engine ${engine}`);
    const port = await freePort();
    const tmp = scratch(engine);
    const [cmd, args] = spec.command(port);
    // Its own process group, so stop() ends the driver, Xvfb and the browser together.
    const proc = spawn(cmd, args, {
      detached: true, stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, TMPDIR: tmp },
    });
    let log = "";
    proc.stderr.on("data", (d) => (log = (log + d).slice(-4000)));
    const b = new Browser(engine, `http://127.0.0.1:${port}`, proc, tmp);
    b.driverLog = () => log;
    try {
      for (let i = 0; ; i++) {
        try {
          if ((await b.raw("GET", "/status", undefined, 2000)).ready !== undefined) break;
        } catch {}
        if (proc.exitCode !== null || i > 200) throw new Error(`${engine} driver did not start: ${log}`);
        await sleep(50);
      }
      const session = await b.raw("POST", "/session", {
        capabilities: { alwaysMatch: { acceptInsecureCerts: true, ...spec.capabilities } },
      }, startTimeoutMs);
      b.session = session.sessionId;
      b.capabilities = session.capabilities;
      b.version = spec.version();
      await b.cmd("POST", "/timeouts", { script: 180_000, pageLoad: 60_000 });
      b.home = await b.cmd("GET", "/window");
    } catch (e) {
      await b.stop();
      throw e;
    }
    return b;
  }

  constructor(engine, url, proc, tmp) {
    Object.assign(this, { engine, url, proc, tmp });
  }

  async raw(method, p, body, timeoutMs = 30_000) {
    const res = await fetch(this.url + p, {
      method,
      headers: body === undefined ? {} : { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const json = await res.json();
    if (!res.ok) throw new Error(`${this.engine} ${method} ${p}: ${JSON.stringify(json.value ?? json).slice(0, 500)}`);
    return json.value;
  }

  cmd(method, p, body, timeoutMs) {
    return this.raw(method, `/session/${this.session}${p}`, body, timeoutMs);
  }

  async stop() {
    try {
      if (this.session) await this.raw("DELETE", `/session/${this.session}`, undefined, 20_000);
    } catch {}
    if (this.proc.exitCode === null) {
      const exited = new Promise((r) => this.proc.once("exit", r));
      try { process.kill(-this.proc.pid, "SIGTERM"); } catch {}
      await Promise.race([exited, sleep(5000)]);
      try { process.kill(-this.proc.pid, "SIGKILL"); } catch {}
    }
    rmSync(this.tmp, { recursive: true, force: true });
  }

  /** A new window on `url` with the harness loaded; returns its Tab. */
  async open(url) {
    const { handle } = await this.cmd("POST", "/window/new", { type: "window" });
    const tab = new Tab(this, handle);
    await tab.focus();
    await this.cmd("POST", "/url", { url });
    for (let i = 0; i < 100; i++) {
      const ready = await this.cmd("POST", "/execute/sync", {
        script: "return document.documentElement.dataset.twReady === '1'", args: [],
      });
      if (ready) return tab;
      await sleep(50);
    }
    throw new Error(`${this.engine}: the harness did not load at ${url}`);
  }

  /** Closes every window but the first (blank) one. */
  async closeAll() {
    for (const h of await this.cmd("GET", "/window/handles")) {
      if (h === this.home) continue;
      await this.cmd("POST", "/window", { handle: h });
      await this.cmd("DELETE", "/window");
    }
    await this.cmd("POST", "/window", { handle: this.home });
    this.current = this.home;
  }
}

/** One window of a Browser, running the harness page (tests/e2e/site/harness.js). */
export class Tab {
  constructor(browser, handle) {
    Object.assign(this, { browser, handle });
  }

  async focus() {
    if (this.browser.current === this.handle) return;
    await this.browser.cmd("POST", "/window", { handle: this.handle });
    this.browser.current = this.handle;
  }

  /** Calls the harness's `fn(...args)` in this page through the DOM bridge. */
  async call(fn, ...args) {
    await this.focus();
    const reply = await this.browser.cmd("POST", "/execute/async", {
      script: `
        const [fn, args, done] = arguments;
        const id = Math.random().toString(36).slice(2);
        const root = document.documentElement;
        const on = () => {
          const r = root.getAttribute("data-tw-reply-" + id);
          if (r === null) return;
          root.removeAttribute("data-tw-reply-" + id);
          document.removeEventListener("tw:reply", on);
          done(r);
        };
        document.addEventListener("tw:reply", on);
        root.setAttribute("data-tw-call", JSON.stringify({ id, fn, args }));
        document.dispatchEvent(new Event("tw:call"));`,
      args: [fn, args],
    }, 200_000);
    const { value, error } = JSON.parse(reply);
    if (error !== undefined) throw new PageError(error);
    return value;
  }

  async close() {
    await this.focus();
    await this.browser.cmd("DELETE", "/window");
    await this.browser.cmd("POST", "/window", { handle: this.browser.home });
    this.browser.current = this.browser.home;
  }
}

/** A rejection inside the page: `name: message` of the JS error. */
export class PageError extends Error {
  get errorName() {
    return this.message.split(":")[0];
  }
}
