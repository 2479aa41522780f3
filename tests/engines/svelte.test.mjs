// tokenwarden/svelte in every engine (Chromium, Firefox ESR, WebKitGTK), through each one's
// WebDriver: the Svelte fixture (tests/svelte/dist, built from the packed tarball by
// tests/svelte/build.sh) served by the reference server over HTTPS with 4-second tokens, driven
// as a person does: sign in, a request, one refresh at expiry, a 401 replayed once, a logout in
// another window shown in the first.
//
//   node --test tests/engines/svelte.test.mjs             all three engines
//   TW_ENGINES=firefox node --test tests/engines/svelte.test.mjs
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, rmSync } from "node:fs";
import path from "node:path";
import { eachEngine, Server, certificate, root, scratch, sleep } from "./webdriver.mjs";

const ELEMENT = "element-6066-11e4-a52e-4f735466cecf";
const DIST = path.join(root, "tests/svelte/dist");

let server, dir;
before(async () => {
  if (!existsSync(path.join(DIST, "index.html"))) throw new Error(`no ${DIST}: run tests/svelte/build.sh first`);
  dir = scratch("svelte");
  // A database file, as users run it (its scratch directory goes after the run).
  server = new Server({ tls: certificate(dir), ttl: 4, db: `sqlite://${dir}/svelte.db`, www: DIST });
  await server.start();
});
after(async () => {
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** WebDriver helpers on one browser: elements by XPath, text by test id. */
function driver(b) {
  const url = () => b.cmd("GET", "/url");
  const find = async (xpath, timeoutMs = 20_000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        return (await b.cmd("POST", "/element", { using: "xpath", value: xpath }))[ELEMENT];
      } catch (e) {
        if (Date.now() > deadline) throw new Error(`${b.engine}: no ${xpath} at ${await url()}: ${e.message}`);
        await sleep(100);
      }
    }
  };
  const text = (id) => b.cmd("POST", "/execute/sync", {
    script: `const e = document.querySelector('[data-testid="${id}"]'); return e ? e.textContent : null;`, args: [],
  });
  const until = async (id, want, timeoutMs = 20_000) => {
    const deadline = Date.now() + timeoutMs;
    let got;
    while ((got = await text(id)) !== want) {
      if (Date.now() > deadline) throw new Error(`${b.engine}: [${id}] is ${JSON.stringify(got)}, not ${JSON.stringify(want)}`);
      await sleep(50);
    }
  };
  return {
    text, until,
    go: (u) => b.cmd("POST", "/url", { url: u }),
    button: async (label) => b.cmd("POST", `/element/${await find(`//button[normalize-space()='${label}']`)}/click`, {}),
    type: async (name, value) => b.cmd("POST", `/element/${await find(`//input[@name='${name}']`)}/value`, { text: value }),
    enabled: async (label) => b.cmd("GET", `/element/${await find(`//button[normalize-space()='${label}']`)}/enabled`),
    /** Clicks "Load profile" and waits for the load to succeed. */
    async load() {
      const n = Number(await text("loads"));
      await this.button("Load profile");
      await until("loads", String(n + 1));
      await until("name", "Engine User");
    },
  };
}

eachEngine((engine, browser) => {

  test("sign in, a request, one refresh at expiry, a 401 replayed once, a logout in another window", async () => {
    const d = driver(browser);
    await server.reset();
    await d.go(`${server.base}/`);
    await d.until("status", "signed out");
    for (let i = 0; !(await d.enabled("Log in")); i++) {
      if (i > 200) throw new Error(`${engine}: Log in stays disabled`);
      await sleep(50);
    }
    const { email, password } = await server.newUser();
    await d.type("email", email);
    await d.type("password", password);
    await d.button("Log in");
    await d.until("status", `signed in as ${email}`);
    await d.load();

    // Expiry: due after 2 s; the next request refreshes first, once.
    const expires = await d.text("expires");
    await server.reset();
    await sleep(2_200);
    await d.load();
    assert.notEqual(await d.text("expires"), expires);
    assert.equal((await server.stats()).refresh_calls, 1);

    // A 401 (the signing key revoked): one refresh, one replay.
    await server.reset();
    await server.hook("POST", "/test/keys/revoke");
    await d.load();
    assert.equal((await server.stats()).refresh_calls, 1);

    // Another window of the same profile logs out; the first one shows it.
    const first = await browser.cmd("GET", "/window");
    const { handle } = await browser.cmd("POST", "/window/new", { type: "window" });
    await browser.cmd("POST", "/window", { handle });
    await d.go(`${server.base}/`);
    await d.until("status", `signed in as ${email}`);
    await d.button("Log out");
    await d.until("status", "signed out");
    await browser.cmd("DELETE", "/window");
    await browser.cmd("POST", "/window", { handle: first });
    await d.until("status", "signed out");
    await d.until("end-reason", "logout");
  });
});
