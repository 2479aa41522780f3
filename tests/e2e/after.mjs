// node after.mjs URL COMMAND [ARGS...]: waits (up to 60 s) until URL answers, then runs the
// command in its place (its exit code, its signals). The API examples read the auth server's
// metadata as they start: Playwright starts its web servers together.
import { spawn } from "node:child_process";

const [url, command, ...args] = process.argv.slice(2);
const deadline = Date.now() + 60_000;
for (;;) {
  try {
    if ((await fetch(url)).ok) break;
  } catch {}
  if (Date.now() > deadline) {
    console.error(`after.mjs: ${url} did not answer within 60 s`);
    process.exit(1);
  }
  await new Promise((r) => setTimeout(r, 100));
}
const child = spawn(command, args, { stdio: "inherit" });
for (const s of ["SIGTERM", "SIGINT"]) process.on(s, () => child.kill(s));
child.on("exit", (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
