// Running the reference server from Node tests (tests/engines/, tests/verify/): a free port, the
// binary, and the process started until it answers, or stopped.
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

/** The server binary: TW_SERVER_BINARY (scripts/test-bins.mjs, or a copy of the `test-hooks`
 * build in a shared tree where another build may replace target/debug's), else target/debug's. */
export const serverBinary = () => process.env.TW_SERVER_BINARY ?? path.join(root, "target/debug/tokenwarden-server");

/** A port to listen on that nothing listens on now: from below the kernel's ephemeral range
 * (ip_local_port_range), where no outgoing connection takes one. A port from listen(0) is an
 * ephemeral one: between its close and the server's bind, a browser's or a driver's outgoing
 * connection could take it (a test-engines run failed so, with EADDRINUSE). Never the same port
 * twice in a process; not the fixed ones of the Makefile, Playwright and bench/ (18180-18449)
 * or scripts/pg.sh (25432-27431). */
export async function freePort() {
  const top = Math.min(25000, ephemeralLow());
  for (let i = 0; top > 11000 && i < 200; i++) {
    const port = 10000 + Math.floor(Math.random() * (top - 10000));
    if ((port >= 18180 && port < 18450) || handedOut.has(port)) continue;
    if (await listens(port)) {
      handedOut.add(port);
      return port;
    }
  }
  const port = await listens(0);
  if (!port) throw new Error("freePort: cannot listen on 127.0.0.1");
  return port;
}
const handedOut = new Set();
function ephemeralLow() {
  try {
    return Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]) || 32768;
  } catch {
    return 32768;
  }
}
/** Whether `port` can be listened on (its number, from 0 the kernel's pick); false if not. */
const listens = (port) =>
  new Promise((resolve) => {
    const s = net.createServer();
    s.once("error", () => resolve(false));
    s.listen(port, "127.0.0.1", () => {
      const got = s.address().port;
      s.close(() => resolve(port === 0 ? got : true));
    });
  });

/** `binary args` with `env` (RUST_LOG=warn), once `healthy()` resolves true (polled for 10 s);
 * its stderr in `proc.log`. Throws with that log if it exits or never answers. */
export async function startServer(binary, args, env, healthy) {
  const proc = spawn(binary, args, { env: { ...process.env, RUST_LOG: "warn", ...env }, stdio: ["ignore", "ignore", "pipe"] });
  proc.log = "";
  proc.stderr.on("data", (d) => (proc.log += d));
  const exited = new Promise((r) => proc.once("exit", r));
  for (let i = 0; i < 200; i++) {
    try {
      if (await healthy()) return proc;
    } catch {}
    if (proc.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  proc.kill();
  await exited;
  throw new Error(`tokenwarden-server did not start:\n${proc.log}`);
}

/** SIGTERM, and the exit awaited (nothing if it is not running). */
export async function stopServer(proc) {
  if (!proc || proc.exitCode !== null) return;
  const exited = new Promise((r) => proc.once("exit", r));
  proc.kill("SIGTERM");
  await exited;
}
