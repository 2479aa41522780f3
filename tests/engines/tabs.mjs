// What the cross-tab and fault scenarios share (tests/engines/cross-tab.test.mjs and
// faults.test.mjs, two files so that \`make test-engines\` runs them side by side): windows of the
// harness page logged in together, a storm fired from all of them at one moment, and each
// engine's scenarios, each started from one blank window.
import { test } from "node:test";
import assert from "node:assert/strict";
import { eachEngine, sleep } from "./webdriver.mjs";

/** Half the 4-second token lifetime (the leeway is capped at half), plus a margin. */
export const UNTIL_DUE_MS = 2_200;

/** For each engine: \`tests(engine, browser, scenario)\`, where \`scenario(name, fn)\` is a test that
 * closes every window after it, so that no manager of an earlier scenario is a peer. */
export function eachEngineScenarios(tests) {
  eachEngine((engine, browser) => {
    const scenario = (name, fn) =>
      test(name, async () => {
        try {
          await fn();
        } finally {
          await browser.closeAll();
        }
      });
    tests(engine, browser, scenario);
  });
}

/** `n` windows of the harness, logged in through the first (the others learn it by message). */
export async function loggedIn(browser, n, server, options = {}) {
  const tabs = [];
  for (let i = 0; i < n; i++) {
    const tab = await browser.open(`${server.base}/`);
    await tab.call("setup", options);
    tabs.push(tab);
  }
  await tabs[0].call("login", await server.newUser());
  for (const t of tabs.slice(1)) {
    if (!(await t.call("state")).isAuthenticated) {
      const restored = await t.call("restore");
      const st = await t.call("state");
      assert.ok(st.isAuthenticated, `restore() gave ${restored}: ${JSON.stringify(st)} ${JSON.stringify(await t.call("storage"))}`);
    }
  }
  for (const t of tabs) assert.equal((await t.call("state")).isAuthenticated, true);
  await server.reset();
  return tabs;
}

/** Every tab fires `perTab` concurrent auth.fetch at one moment; returns [status, ms] pairs. */
export async function stormAll(tabs, perTab) {
  const at = Date.now() + 300 + 100 * tabs.length;
  for (const t of tabs) await t.call("burstAt", perTab, at);
  const results = [];
  for (const t of tabs) results.push(...(await t.call("collect")));
  return results;
}

export const failures = (results) => results.map(([s]) => s).filter((s) => s !== 200);

export async function everyTab(tabs, check) {
  for (const [i, t] of tabs.entries()) await check(await t.call("state"), t, i);
}

/** Polls `tab`'s state until `ok(state)` (messages between tabs take a moment), for 5 s at most. */
export async function until(tab, ok) {
  let st;
  for (let i = 0; i < 50; i++) {
    st = await tab.call("state");
    if (ok(st)) return st;
    await sleep(100);
  }
  assert.fail(`never reached: ${JSON.stringify(st)}`);
}
