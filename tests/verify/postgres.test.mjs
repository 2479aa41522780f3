// postgresReplayStore against a real PostgreSQL: `scripts/pg.sh run node --test
// tests/verify/postgres.test.mjs` (TW_TEST_PG_URL; skipped without it). `pg` is a devDependency
// of the repository only: the package takes the caller's pool.
import assert from "node:assert/strict";
import { test } from "node:test";
import { createVerifier, postgresReplayStore } from "../../pkg/verify.js";
import { corpus, stubFetch } from "./corpus.mjs";

const url = process.env.TW_TEST_PG_URL;

test("postgresReplayStore: a proof is accepted by exactly one of several instances, restart or not", { skip: !url && "TW_TEST_PG_URL is not set (scripts/pg.sh run ...)" }, async () => {
  const { default: pg } = await import("pg");
  const pools = [new pg.Pool({ connectionString: url, max: 4 }), new pg.Pool({ connectionString: url, max: 4 })];
  try {
    await pools[0].query("DROP TABLE IF EXISTS tokenwarden_dpop_proofs");
    let t = 1_800_000_000_000;
    const stores = pools.map((p) => postgresReplayStore(p, { now: () => t }));
    // The same keys claimed at once from two instances, 50 times: one winner each.
    const keys = Array.from({ length: 50 }, (_, i) => `key-${i}`);
    const results = await Promise.all(keys.flatMap((k) => stores.map((s) => s.claim(k, 1_800_000_061))));
    for (let i = 0; i < keys.length; i++) assert.equal(results[2 * i] + results[2 * i + 1], 1, keys[i]);
    const { rows } = await pools[0].query("SELECT count(*)::int AS n FROM tokenwarden_dpop_proofs");
    assert.equal(rows[0].n, 50);
    // A new store (a restarted instance) still refuses them.
    assert.equal(await postgresReplayStore(pools[1], { now: () => t }).claim("key-3", 1_800_000_061), false);
    // An instance whose clock is 10 s ahead prunes 52 s later: the others still accept the
    // proofs' iat for 8 s more, so their rows stay (before, it deleted them: replayable there).
    t += 52_000;
    assert.equal(await postgresReplayStore(pools[1], { now: () => t + 10_000 }).claim("ahead", 1_800_000_122), true);
    assert.equal(await stores[0].claim("key-3", 1_800_000_061), false);
    // Expired rows are deleted now and then, ten minutes after they expired.
    t += 700_000;
    assert.equal(await postgresReplayStore(pools[0], { now: () => t }).claim("fresh", 1_800_000_200), true);
    const left = await pools[0].query("SELECT proof FROM tokenwarden_dpop_proofs ORDER BY proof");
    assert.deepEqual(left.rows.map((r) => r.proof), ["fresh"]);

    // Through two verifiers sharing the table: a proof accepted by one is refused by the other.
    const c = corpus.cases.find((x) => x.name === "valid bound request");
    const make = (pool) =>
      createVerifier({
        authServer: "https://auth.example",
        publicOrigin: corpus.config.public_origins,
        nonceSecret: corpus.config.nonce_secret,
        now: () => c.now * 1000,
        fetch: stubFetch(corpus.config),
        replayStore: postgresReplayStore(pool, { now: () => c.now * 1000 }),
      });
    const [a, b] = [await make(pools[0]), await make(pools[1])];
    assert.equal((await a.verify(c.request)).sub, "user-1");
    const e = await b.verify(c.request).catch((x) => x);
    assert.deepEqual([e.status, e.code, e.description], [401, "invalid_dpop_proof", "the DPoP proof was already used"]);
  } finally {
    await Promise.all(pools.map((p) => p.end()));
  }
});
