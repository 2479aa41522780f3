// Sign-in with an OpenID Connect provider in every engine (Chromium, Firefox ESR, WebKitGTK),
// through each one's WebDriver, as a person does it: the demo's button, the provider's own
// login and consent pages (panva's oidc-provider, tests/oidc/provider.mjs, on loopback), back
// signed in; then the provider's logout ends the session (back-channel). The reference server
// serves HTTPS (the flow and refresh cookies are `__Host-`, hence `Secure`).
//
//   node --test tests/engines/oidc.test.mjs             all three engines
//   TW_ENGINES=firefox node --test tests/engines/oidc.test.mjs
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { rmSync } from "node:fs";
import path from "node:path";
import { eachEngine, Server, certificate, freePort, root, scratch, sleep } from "./webdriver.mjs";

const ELEMENT = "element-6066-11e4-a52e-4f735466cecf";

let server, idp, dir, issuer;
before(async () => {
  dir = scratch("oidc");
  const tls = certificate(dir);
  const port = await freePort();
  issuer = `http://127.0.0.1:${port}`;
  server = new Server({
    tls, ttl: 60, db: "sqlite::memory:", www: path.join(root, "www"),
    extra: ["--demo", "--oidc", `name=idp,issuer=${issuer},client-id=tokenwarden-test,client-secret-file=tests/oidc/client-secret,link=verified-email`],
  });
  server.port = await freePort();
  // The provider knows the server's https callback; it trusts this run's certificate for its
  // back-channel logout requests.
  idp = spawn("node", ["tests/oidc/provider.mjs", String(port), `https://127.0.0.1:${server.port}`], {
    cwd: root, env: { ...process.env, NODE_EXTRA_CA_CERTS: tls.cert }, stdio: ["ignore", "pipe", "ignore"],
  });
  idp.lines = [];
  await new Promise((resolve, reject) => {
    idp.stdout.setEncoding("utf8");
    idp.stdout.on("data", (d) => {
      idp.lines.push(...d.trim().split("\n"));
      if (d.includes("ready")) resolve();
    });
    idp.once("exit", () => reject(new Error("the provider exited")));
  });
  await server.start();
});
after(async () => {
  await server?.stop();
  idp?.kill();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** WebDriver helpers on one browser. */
function driver(b) {
  const find = async (css, timeoutMs = 20_000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        return (await b.cmd("POST", "/element", { using: "css selector", value: css }))[ELEMENT];
      } catch (e) {
        if (Date.now() > deadline) throw new Error(`${b.engine}: no ${css} at ${await url()}: ${e.message}`);
        await sleep(100);
      }
    }
  };
  const url = () => b.cmd("GET", "/url");
  const script = (s) => b.cmd("POST", "/execute/sync", { script: s, args: [] });
  const until = async (what, f, timeoutMs = 20_000) => {
    const deadline = Date.now() + timeoutMs;
    while (!(await f())) {
      if (Date.now() > deadline) throw new Error(`${b.engine}: ${what} (at ${await url()})`);
      await sleep(100);
    }
  };
  return {
    url, script, until, find,
    click: async (css) => b.cmd("POST", `/element/${await find(css)}/click`, {}),
    type: async (css, text) => b.cmd("POST", `/element/${await find(css)}/value`, { text }),
    go: (u) => b.cmd("POST", "/url", { url: u }),
    shown: (id) => script(`const e = document.getElementById(${JSON.stringify(id)}); return !!e && !e.hidden;`),
  };
}

eachEngine((engine, browser) => {

  test("the demo's provider button, the provider's pages, back signed in; the provider's logout ends it", async () => {
    const d = driver(browser);
    await d.go(`${server.base}/`);
    await d.click("#provider-buttons button");
    await d.until("at the provider's login", async () => (await d.url()).startsWith(issuer));
    await d.type('input[name="login"]', `${engine}-user`);
    await d.type('input[name="password"]', "any password");
    await d.click('button[type="submit"]');
    // The consent page, then back.
    await d.until("past the login", async () => !(await d.url()).includes("/interaction/") || (await d.script("return !document.querySelector('input[name=login]')")));
    if ((await d.url()).startsWith(issuer)) await d.click('button[type="submit"]');
    await d.until("back at the demo", async () => (await d.url()).startsWith(server.base));
    await d.until("signed in", () => d.shown("session"));
    // The profile comes from /api/me after the sign-in: wait for it.
    const emailNow = () => d.script(`const e = document.querySelector('#profile dd[data-field="email"]'); return e ? e.textContent : ""`);
    await d.until("the profile shown", async () => (await emailNow()).includes("@"));
    const email = await emailNow();
    assert.equal(email, `${engine}-user@idp.test`);
    // The session is DPoP-bound: the token names the page's key.
    assert.match(await d.script("return document.getElementById('claims').textContent"), /"jkt"/);

    // The user signs out at the provider: its logout token reaches the server.
    const before = idp.lines.filter((l) => l.startsWith("backchannel ok")).length;
    await d.go(`${issuer}/session/end`);
    await d.click('button[name="logout"]');
    await d.until("the provider's logout token sent", async () => idp.lines.filter((l) => l.startsWith("backchannel ok")).length > before);
    await d.go(`${server.base}/`);
    await d.until("signed out", () => d.shown("login-card"));
    assert.equal(await d.shown("session"), false);
  });
});
