// Runs several `cargo test` selections at once: cargo holds the build directory's lock while
// its tests run, so two `cargo test` commands run one after the other even when nothing is left
// to build. Each GROUP is built first (`cargo test --no-run`, one at a time), then every test
// binary of every group runs, at most --jobs at once, each with its group's environment; each
// binary's output is printed whole when it ends. Exits non-zero if any binary failed.
//
//   node scripts/test-bins.mjs [--jobs N] 'NAME|ENV=V ENV2=V2|cargo test args' ...
//   node scripts/test-bins.mjs --self-test
import { spawn, spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync } from "node:fs";
import os from "node:os";
import path from "node:path";

const args = process.argv.slice(2);

/** 'name|A=1 B=2|-p crate --test x' -> { name, env, cargoArgs }. */
export function parseGroup(spec) {
  const parts = spec.split("|");
  if (parts.length !== 3 || !parts[0]) throw new Error(`a group is 'name|ENV=V ...|cargo test args': ${spec}`);
  const env = {};
  for (const kv of parts[1].split(/\s+/).filter(Boolean)) {
    const eq = kv.indexOf("=");
    if (eq < 1) throw new Error(`not ENV=VALUE: ${kv}`);
    env[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  return { name: parts[0], env, cargoArgs: parts[2].split(/\s+/).filter(Boolean) };
}

/** The test executables `cargo test ARGS --no-run` builds (from its JSON messages), and the
 * binaries (`bin` targets) built for them. */
export function executables(jsonLines) {
  const out = [];
  out.bins = [];
  for (const line of jsonLines.split("\n")) {
    if (!line.startsWith("{")) continue;
    let m;
    try {
      m = JSON.parse(line);
    } catch {
      continue;
    }
    if (m.reason === "compiler-artifact" && m.profile?.test && m.executable) {
      out.push({ path: m.executable, target: `${m.target.kind.join(",")} ${m.target.name}` });
    } else if (m.reason === "compiler-artifact" && m.target?.kind?.includes("bin") && m.executable) {
      out.bins.push({ name: m.target.name, path: m.executable });
    }
  }
  return out;
}

/** Runs `tasks` (functions returning promises) at most `jobs` at once. */
export async function pool(tasks, jobs) {
  const results = new Array(tasks.length);
  let next = 0;
  async function worker() {
    while (next < tasks.length) {
      const i = next++;
      results[i] = await tasks[i]();
    }
  }
  await Promise.all(Array.from({ length: Math.min(jobs, tasks.length) }, worker));
  return results;
}

function run(path, env) {
  return new Promise((resolve) => {
    const started = Date.now();
    const child = spawn(path, [], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (d) => (output += d));
    child.stderr.on("data", (d) => (output += d));
    child.on("close", (code, signal) => resolve({ code: code ?? (signal ? 1 : 0), output, secs: (Date.now() - started) / 1000 }));
  });
}

async function selfTest() {
  const g = parseGroup("pg|TW_TEST_BACKEND=postgres X=1|-p s --test a --test b");
  if (g.name !== "pg" || g.env.X !== "1" || g.cargoArgs.length !== 6) throw new Error("parseGroup");
  const exes = executables(
    [
      '{"reason":"compiler-artifact","profile":{"test":true},"executable":"/t/a","target":{"kind":["test"],"name":"a"}}',
      '{"reason":"compiler-artifact","profile":{"test":false},"executable":"/t/bin","target":{"kind":["bin"],"name":"b"}}',
      '{"reason":"build-finished","success":true}',
    ].join("\n"),
  );
  if (exes.length !== 1 || exes[0].path !== "/t/a") throw new Error("executables");
  let running = 0, most = 0;
  await pool(Array.from({ length: 6 }, () => async () => {
    running++;
    most = Math.max(most, running);
    await new Promise((r) => setTimeout(r, 10));
    running--;
  }), 2);
  if (most !== 2) throw new Error(`pool ran ${most} at once`);
  const failed = await run("false", {});
  if (failed.code === 0) throw new Error("a failing binary counts as passed");
  console.log("test-bins self-test: ok");
}

if (args[0] === "--self-test") {
  await selfTest();
} else {
  // One more than the cores: the suites wait on sockets and databases much of the time, and
  // their timing checks (a revocation seen within a second) need the cores not swamped.
  let jobs = os.cpus().length + 1;
  const specs = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--jobs") jobs = Number(args[++i]);
    else specs.push(args[i]);
  }
  const tasks = [];
  for (const spec of specs) {
    const g = parseGroup(spec);
    const built = spawnSync("cargo", ["test", ...g.cargoArgs, "--no-run", "--message-format=json-render-diagnostics"], {
      encoding: "utf8", stdio: ["ignore", "pipe", "inherit"], maxBuffer: 1 << 28,
    });
    if (built.status !== 0) {
      console.error(`test-bins: building ${g.name} failed`);
      process.exit(1);
    }
    const exes = executables(built.stdout);
    // Each group's own copy of the server binary (cargo puts every build's at one path).
    const env = { ...g.env };
    for (const bin of exes.bins) {
      const dir = path.join(path.dirname(bin.path), "test-bins", g.name);
      mkdirSync(dir, { recursive: true });
      const copy = path.join(dir, path.basename(bin.path));
      copyFileSync(bin.path, copy);
      if (bin.name === "tokenwarden-server") env.TW_SERVER_BINARY = copy;
    }
    for (const exe of exes) {
      tasks.push(async () => {
        const r = await run(exe.path, env);
        console.log(`\n---- ${g.name}: ${exe.target} (${r.secs.toFixed(1)} s, ${r.code === 0 ? "ok" : "FAILED"}) ----\n${r.output}`);
        return { name: `${g.name}: ${exe.target}`, ...r };
      });
    }
  }
  const started = Date.now();
  const results = await pool(tasks, jobs);
  const failed = results.filter((r) => r.code !== 0);
  console.log(`\ntest-bins: ${results.length} test binaries in ${((Date.now() - started) / 1000).toFixed(1)} s, ${jobs} at once; ${failed.length} failed`);
  for (const f of failed) console.log(`  FAILED ${f.name}`);
  process.exit(failed.length ? 1 : 0);
}
