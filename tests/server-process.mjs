// Running the reference server from Node tests (tests/engines/, tests/verify/): a free port, the
// binary, and the process started until it answers, or stopped.
import { spawn } from "node:child_process";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

/** The server binary: TW_SERVER_BINARY (scripts/test-bins.mjs, or a copy of the `test-hooks`
 * build in a shared tree where another build may replace target/debug's), else target/debug's. */
export const serverBinary = () => process.env.TW_SERVER_BINARY ?? path.join(root, "target/debug/tokenwarden-server");

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

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
