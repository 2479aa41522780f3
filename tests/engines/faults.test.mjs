// The fault scenarios in every engine (Chromium, Firefox ESR, WebKitGTK), each through its own
// WebDriver, against the real reference server over HTTPS: a lost refresh response, 503s from
// the refresh endpoint, a restart. Apart from the cross-tab scenarios (cross-tab.test.mjs) so
// that \`make test-engines\` runs the two side by side: most of each is waiting for tokens to
// fall due.
//
//   node --test tests/engines/faults.test.mjs           all three engines
//   TW_ENGINES=webkit node --test tests/engines/faults.test.mjs
import { after, before } from "node:test";
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { Server, certificate, scratch, sleep } from "./webdriver.mjs";
import { UNTIL_DUE_MS, eachEngineScenarios, everyTab, failures, loggedIn, stormAll } from "./tabs.mjs";

let main, dir;
before(async () => {
  dir = scratch("faults");
  // A database file, so that a restart keeps sessions and signing keys.
  main = await new Server({ tls: certificate(dir), ttl: 4, db: `sqlite://${dir}/main.db` }).start();
});
after(async () => {
  await main?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

eachEngineScenarios((engine, browser, scenario) => {
  scenario("fault: the refresh response is lost; recovered across tabs without a logout", async () => {
    const tabs = await loggedIn(browser, 4, main);
    await sleep(UNTIL_DUE_MS);
    // The server rotates, then drops the connection: the client never sees the new cookie.
    await main.faults({ refresh_drop_next: 1 });
    const results = await stormAll(tabs, 10);
    assert.deepEqual(failures(results), []);
    const s = await main.stats();
    // Rotated twice: the lost one, and its retry (the same token again, within the repeat
    // window). Chromium and Firefox re-send a POST themselves when a reused connection closes
    // unanswered; that copy carries the same DPoP proof and is refused as a replay (401,
    // nothing rotated), so they count one call more.
    assert.equal(s.refresh_rotated, 2);
    assert.ok(s.refresh_calls === 2 || (engine !== "webkit" && s.refresh_calls === 3), `${s.refresh_calls} calls`);
    assert.equal(s.reuse_detections, 0);
    await everyTab(tabs, (st) => {
      assert.equal(st.isAuthenticated, true);
      assert.ok(!st.events.includes("sessionExpired"), JSON.stringify(st));
    });
  });

  scenario("fault: 503s from the refresh endpoint never log anyone out", async () => {
    const tabs = await loggedIn(browser, 4, main);
    await sleep(UNTIL_DUE_MS);
    // Two 503s, then the third attempt (after backoff) succeeds: the callers just wait.
    await main.faults({ refresh_fail_next: 2 });
    const results = await stormAll(tabs, 10);
    assert.deepEqual(failures(results), []);
    assert.equal((await main.stats()).refresh_calls, 3);
    // Every attempt of a forced refresh fails: a NetworkError, and still logged in everywhere.
    await main.reset();
    await main.faults({ refresh_fail_next: 3 });
    await assert.rejects(tabs[0].call("refresh", true), (e) => e.errorName === "NetworkError");
    await everyTab(tabs, (st) => {
      assert.equal(st.isAuthenticated, true);
      assert.ok(!st.events.includes("sessionExpired") && !st.events.includes("logout"), JSON.stringify(st));
    });
    // The server recovers: the next refresh works.
    await tabs[0].call("refresh", true);
    assert.deepEqual(failures(await stormAll(tabs, 5)), []);
    assert.equal((await main.stats()).reuse_detections, 0);
  });

  scenario("fault: the server restarts; the tabs stay logged in and carry on", async () => {
    const tabs = await loggedIn(browser, 4, main);
    await main.stop();
    await sleep(UNTIL_DUE_MS);
    // Down while every token is due: requests fail as network errors, nobody is logged out.
    const down = await stormAll(tabs, 2);
    assert.deepEqual([...new Set(down.map(([s]) => s))], ["NetworkError"]);
    await everyTab(tabs, (st) => {
      assert.equal(st.isAuthenticated, true);
      assert.ok(!st.events.includes("sessionExpired") && !st.events.includes("logout"), JSON.stringify(st));
    });
    // Back, with the same database: the session and the signing keys survived.
    await main.start();
    const results = await stormAll(tabs, 10);
    assert.deepEqual(failures(results), []);
    const s = await main.stats();
    // One rotation for the whole browser. The restarted server refuses the nonce the tabs
    // learnt before it went down (its replay cache restarted empty: docs/PROTOCOL.md,
    // "Replay cache"), so that refresh costs one use_dpop_nonce round trip first.
    assert.equal(s.refresh_rotated, 1);
    assert.equal(s.refresh_calls, 2);
    assert.equal(s.reuse_detections, 0);
  });
});
