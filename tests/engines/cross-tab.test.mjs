// The cross-tab scenarios in every engine: Chromium, Firefox ESR and WebKitGTK, each through its
// own WebDriver, against the real reference server over HTTPS (WebKit, like Safari, refuses the
// \`Secure\` refresh cookie over plain http). The fault scenarios are in faults.test.mjs.
//
//   node --test tests/engines/                          all three engines
//   TW_ENGINES=webkit node --test tests/engines/        one
//
// Windows of one WebDriver session share cookies, Web Locks and BroadcastChannel, as tabs do.
import { after, before } from "node:test";
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { Server, certificate, scratch, sleep } from "./webdriver.mjs";
import { eachEngineScenarios, everyTab, failures, loggedIn, stormAll, until } from "./tabs.mjs";

/** Half the 20-second token lifetime, plus a margin, for the 1000-request storm: it must not
 * outlast the token its refresh brings (a request that reaches the server after that token's
 * \`exp\` gets a 401 and a second refresh). In Chromium, with another test file running beside it,
 * its p99 was up to ~8.4 s: 10-second tokens left too little margin. */
const UNTIL_DUE_STORM_MS = 10_200;

let main, storm, plain, dir;
before(async () => {
  dir = scratch("servers");
  const tls = certificate(dir);
  main = await new Server({ tls, ttl: 4, db: "sqlite::memory:" }).start();
  storm = await new Server({ tls, ttl: 20, db: "sqlite::memory:", corsFromSelf: true }).start();
  // Plain http, to show what each engine does with the Secure cookie there.
  plain = await new Server({ tls: null, ttl: 4, db: "sqlite::memory:" }).start();
});
after(async () => {
  await main?.stop();
  await storm?.stop();
  await plain?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

eachEngineScenarios((engine, browser, scenario) => {
  scenario("4 tabs x 250 requests at expiry: one refresh for the whole browser, no token in any storage", async () => {
    const tabs = await loggedIn(browser, 4, storm);
    await sleep(UNTIL_DUE_STORM_MS);
    const results = await stormAll(tabs, 250);
    assert.equal(results.length, 1000);
    assert.deepEqual(failures(results), []);
    const s = await storm.stats();
    assert.equal(s.refresh_calls, 1);
    assert.equal(s.reuse_detections, 0);
    const ms = results.map(([, t]) => t).sort((a, b) => a - b);
    console.log(`# ${engine} storm: 1000 requests, ${s.refresh_calls} refresh, p50 ${ms[500].toFixed(0)} ms, p99 ${ms[990].toFixed(0)} ms`);
    await everyTab(tabs, (st) => assert.ok(st.events.includes("refresh"), JSON.stringify(st)));
    // The token lives in wasm memory only: nothing in any storage, only the hint cookie
    // visible; IndexedDB holds the DPoP private key, which cannot be exported: Ed25519 (EdDSA
    // proofs) where WebCrypto makes one, else P-256, the driver's fallback. All three have
    // Ed25519, but WebKitGTK once fell back under this file's load (a CI trial, 2026-12-07):
    // either is taken, and which one is printed.
    const kinds = new Set();
    for (const t of tabs) {
      const { idb, ...rest } = await t.call("storage");
      assert.deepEqual(rest, { local: 0, session: 0, cookie: "tw_session=1" });
      if (idb !== "n/a") {
        assert.ok(idb.length > 0, "the DPoP key is stored");
        for (const item of idb) {
          assert.match(item, /^private non-extractable (Ed25519|ECDSA) key$/);
          kinds.add(item);
        }
      }
      assert.deepEqual(await t.call("locks"), { held: 0, pending: 0 });
    }
    console.log(`# ${engine} key: ${[...kinds].join(", ")}`);
  });

  scenario("logout in one tab reaches every tab", async () => {
    const tabs = await loggedIn(browser, 4, main);
    await tabs[0].call("logout");
    for (const t of tabs) {
      const st = await until(t, (s) => !s.isAuthenticated);
      assert.ok(st.events.includes("logout"), JSON.stringify(st));
      assert.equal((await t.call("echo")).authorization, null);
    }
    // And the server forgot the session: a new tab finds none.
    const fresh = await browser.open(`${main.base}/`);
    await fresh.call("setup", { sessionHintCookie: null });
    assert.equal(await fresh.call("restore"), false);
  });

  scenario("a new tab gets the live token from its peers, without a refresh", async () => {
    // Peers hand over only a token that is not due yet: 20-second tokens leave 10 s for
    // opening the windows, however loaded the machine.
    await loggedIn(browser, 2, storm);
    const fresh = await browser.open(`${storm.base}/`);
    await fresh.call("setup", {});
    assert.equal(await fresh.call("restore"), true);
    assert.equal((await storm.stats()).refresh_calls, 0);
    assert.match((await fresh.call("echo")).authorization, /^DPoP ey/);
  });

  scenario("a redirect to another origin carries no token; a same-origin one does", async () => {
    const [tab] = await loggedIn(browser, 1, storm);
    // The same server under its other name: another origin, which lets the page read its echo.
    const other = storm.base.replace("127.0.0.1", "localhost");
    const away = await tab.call("redirected", `${other}/test/echo`);
    assert.equal(away.authorization, null, JSON.stringify(away));
    const home = await tab.call("redirected", `${storm.base}/test/echo`);
    assert.match(home.authorization, /^DPoP ey/);
  });

  scenario("a reload restores the session from the HttpOnly cookie with one rotation", async () => {
    // crossTab: false, so the only way back is the refresh cookie: proves the engine stored
    // and sent the Secure, HttpOnly, SameSite=Strict cookie.
    const [tab] = await loggedIn(browser, 1, main, { crossTab: false });
    await tab.call("setup", { crossTab: false });
    assert.equal((await tab.call("state")).isAuthenticated, false);
    assert.equal(await tab.call("restore"), true);
    // A new page has no DPoP nonce yet: its first refresh is answered 400 use_dpop_nonce
    // (nothing rotated) and sent again once with the nonce.
    const s = await main.stats();
    assert.deepEqual([s.refresh_calls, s.refresh_rotated], [2, 1]);
    assert.match((await tab.call("echo")).authorization, /^DPoP ey/);
  });

  scenario("the key store deleted while the cookies live (Safari's eviction): not logged in, no refresh, on every later page; a new sign-in works at once", async () => {
    const [tab] = await loggedIn(browser, 1, main, { crossTab: false });
    await tab.call("dropKeys");
    await browser.closeAll();
    // The next page, and the one after: the hint cookie said a session may exist, but its
    // key is gone, so no refresh could succeed: none is sent, and the hint goes.
    for (const load of ["next page", "the page after"]) {
      const page = await browser.open(`${main.base}/`);
      await page.call("setup", { crossTab: false });
      assert.equal(await page.call("restore"), false, load);
      const st = await page.call("state");
      assert.deepEqual([st.isAuthenticated, st.events], [false, []], load);
      assert.doesNotMatch((await page.call("storage")).cookie, /tw_session/, load);
      await browser.closeAll();
    }
    assert.equal((await main.stats()).refresh_calls, 0, "no refresh attempt");
    // A new sign-in works at once, bound to a new key, and a reload restores it.
    const page = await browser.open(`${main.base}/`);
    await page.call("setup", { crossTab: false });
    await page.call("login", await main.newUser());
    assert.match((await page.call("echo")).authorization, /^DPoP ey/);
    const next = await browser.open(`${main.base}/`);
    await next.call("setup", { crossTab: false });
    assert.equal(await next.call("restore"), true);
    assert.match((await next.call("echo")).authorization, /^DPoP ey/);
  });

  scenario("concurrent 401s in two tabs: one refresh, every request replayed once", async () => {
    const tabs = await loggedIn(browser, 2, main);
    // Emergency key revocation: the tokens in memory are refused from now on.
    await main.hook("POST", "/test/keys/revoke");
    assert.deepEqual(failures(await stormAll(tabs, 5)), []);
    assert.equal((await main.stats()).refresh_calls, 1);
  });

  // The one engine difference: over plain http (even on 127.0.0.1) WebKit, like Safari, refuses
  // the Secure cookies. The login works (the token is in memory) but nothing survives a reload.
  const keepsSecureCookiesOverHttp = engine !== "webkit";
  scenario(`over plain http the session ${keepsSecureCookiesOverHttp ? "survives" : "does not survive"} a reload`, async () => {
    const [tab] = await loggedIn(browser, 1, plain, { crossTab: false });
    assert.match((await tab.call("echo")).authorization, /^DPoP ey/);
    assert.equal((await tab.call("storage")).cookie, keepsSecureCookiesOverHttp ? "tw_session=1" : "");
    await plain.reset();
    await tab.call("setup", { crossTab: false, sessionHintCookie: null });
    assert.equal(await tab.call("restore"), keepsSecureCookiesOverHttp);
    // The new manager's first refresh: a nonce round trip, then one rotation. Without a
    // cookie, the server answers invalid_grant before it looks at the proof.
    const s = await plain.stats();
    assert.deepEqual([s.refresh_calls, s.refresh_rotated], keepsSecureCookiesOverHttp ? [2, 1] : [1, 0]);
  });
});
