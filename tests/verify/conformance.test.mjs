// The conformance corpus through tokenwarden/verify (pkg/verify.js), each case at its clock.
import assert from "node:assert/strict";
import { test } from "node:test";
import * as verify from "../../pkg/verify.js";
import { corpus, runCorpus } from "./corpus.mjs";

test("every case of the conformance corpus is answered as expected", async () => {
  assert.ok(corpus.cases.length >= 40);
  const { failures, ran, skipped } = await runCorpus(verify);
  console.log(`conformance (node-verify): ${ran} cases run, ${skipped} skipped`);
  assert.deepEqual(failures, []);
});
