// Section 11 of bench/run.mjs: bringing users in. How fast `tokenwarden-server users import`
// takes a JSON Lines file of users with their password hashes, and what a sign-in costs for
// each hash kind an app may bring: the first sign-in (verify the foreign hash, then replace it
// by argon2id) and the ones after (argon2id). The hashes are made by the libraries apps use
// (Python's bcrypt, argon2-cffi, hashlib) with those libraries' usual costs.
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

const sleep = (t) => new Promise((r) => setTimeout(r, t));
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const table = (head, rows) => {
  const line = (cells) => `| ${cells.join(" | ")} |`;
  return [line(head), line(head.map(() => "---")), ...rows.map(line)].join("\n");
};

const PASSWORD = "bench imported password";

/** One hash per kind, with each library's usual cost (smoke: the cheapest they allow). */
function hashes(smoke) {
  const costs = smoke
    ? { bcrypt: 4, argon2: "time_cost=1, memory_cost=8192, parallelism=1", ln: 10, pbkdf2: 1000 }
    : { bcrypt: 12, argon2: "", ln: 15, pbkdf2: 720000 };
  const script = `
import sys, os, base64, hashlib, bcrypt, argon2
pw = sys.argv[1].encode()
def b64(b): return base64.b64encode(b).decode().rstrip("=")
print("bcrypt (cost ${costs.bcrypt})\\t" + bcrypt.hashpw(pw, bcrypt.gensalt(rounds=${costs.bcrypt})).decode())
ph = argon2.PasswordHasher(${costs.argon2})
print("argon2id (argon2-cffi defaults)\\t" + ph.hash(pw))
print("argon2i\\t" + argon2.PasswordHasher(${costs.argon2}${costs.argon2 ? ", " : ""}type=argon2.Type.I).hash(pw))
s = os.urandom(16)
print("scrypt (ln=${costs.ln}, r=8, p=1)\\t$scrypt$ln=${costs.ln},r=8,p=1$" + b64(s) + "$" + b64(hashlib.scrypt(pw, salt=s, n=2**${costs.ln}, r=8, p=1, maxmem=2**28, dklen=32)))
s = os.urandom(16)
print("PBKDF2-SHA256 PHC (${costs.pbkdf2} rounds)\\t$pbkdf2-sha256$i=${costs.pbkdf2},l=32$" + b64(s) + "$" + b64(hashlib.pbkdf2_hmac("sha256", pw, s, ${costs.pbkdf2})))
print("Django pbkdf2_sha256 (${costs.pbkdf2} rounds)\\tpbkdf2_sha256$${costs.pbkdf2}$benchsalt123$" + base64.b64encode(hashlib.pbkdf2_hmac("sha256", pw, b"benchsalt123", ${costs.pbkdf2})).decode())
`;
  return execFileSync("/usr/bin/python3", ["-c", script, PASSWORD], { encoding: "utf8" })
    .trim().split("\n").map((l) => l.split("\t"));
}

/** A server on the database `url`; resolves when it answers. */
async function serve(server, url, port) {
  const proc = spawn(server, ["--bind", `127.0.0.1:${port}`, "--demo", "--database-url", url,
    "--login-ip-per-minute", "1000000", "--login-max-failures", "1000000", "--login-account-max-failures", "1000000"],
  { env: { ...process.env, RUST_LOG: "error" }, stdio: ["ignore", "ignore", "inherit"] });
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 100; i++) {
    try {
      if ((await fetch(`${base}/healthz`)).ok) return { base, stop: () => proc.kill("SIGTERM") };
    } catch {}
    await sleep(100);
  }
  proc.kill("SIGKILL");
  throw new Error("the server did not start");
}

export async function accountsBench({ server, smoke, port }) {
  const dir = mkdtempSync(path.join(tmpdir(), "twbench-import-"));
  try {
    // 1. Import: N users, the same bcrypt hash each (an import checks every hash's format and
    // cost; it verifies none), into a fresh SQLite file.
    const n = smoke ? 2000 : 100000;
    // A well-formed bcrypt hash (bcrypt's base64, each part's last character carrying no spare
    // bits, as every bcrypt library writes it; the import refuses any other).
    const bcryptHash = "$2b$10$" + "abcdefghijklmnopqrstuO" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123.";
    const lines = [];
    for (let i = 0; i < n; i++) {
      lines.push(JSON.stringify({ email: `user${i}@import.bench`, id: `legacy-${i}`, name: `User ${i}`,
        email_verified: i % 2 === 0, password_hash: bcryptHash, roles: ["user"], claims: { plan: i % 3 ? "free" : "pro" } }));
    }
    const file = path.join(dir, "users.jsonl");
    writeFileSync(file, lines.join("\n") + "\n");
    const db = `sqlite://${dir}/import.db`;
    const run = (extra) => {
      const t0 = performance.now();
      const out = execFileSync(server, ["users", "import", file, "--database-url", db, ...extra],
        { encoding: "utf8", env: { ...process.env, RUST_LOG: "error" } });
      return [(performance.now() - t0) / 1000, out.trim()];
    };
    const [dry, dryOut] = run(["--dry-run"]);
    const [first, firstOut] = run([]);
    const [again, againOut] = run([]);

    // 2. Sign-in per hash kind, on the same database.
    const kinds = hashes(smoke);
    const users = kinds.map(([label, hash], i) =>
      JSON.stringify({ email: `kind${i}@import.bench`, name: label, password_hash: hash }));
    const kindsFile = path.join(dir, "kinds.jsonl");
    writeFileSync(kindsFile, users.join("\n") + "\n");
    execFileSync(server, ["users", "import", kindsFile, "--database-url", db], { env: { ...process.env, RUST_LOG: "error" } });
    const s = await serve(server, db, port);
    const login = async (email) => {
      const t0 = performance.now();
      const res = await fetch(`${s.base}/auth/login`, {
        method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ email, password: PASSWORD }),
      });
      if (res.status !== 200) throw new Error(`${email}: ${res.status} ${await res.text()}`);
      return performance.now() - t0;
    };
    const rows = [];
    const repeats = smoke ? 2 : 5;
    try {
      for (let i = 0; i < kinds.length; i++) {
        const email = `kind${i}@import.bench`;
        const firstMs = await login(email);
        const after = [];
        for (let r = 0; r < repeats; r++) after.push(await login(email));
        rows.push([kinds[i][0], `${firstMs.toFixed(0)} ms`, `${median(after).toFixed(0)} ms`]);
      }
    } finally {
      s.stop();
    }
    const rate = (n / first).toFixed(0);
    return {
      title: "11. Bringing users in: import and sign-in per hash kind",
      body: table(["", "seconds", ""], [
        [`\`users import\` of ${n.toLocaleString("en")} users, \`--dry-run\``, dry.toFixed(2), dryOut.split("\n").pop()],
        [`\`users import\` of ${n.toLocaleString("en")} users`, `**${first.toFixed(2)}**`, `${rate} users/s; goal: 100,000 in under 60 s`],
        ["the same file again", again.toFixed(2), againOut.split("\n").pop()],
      ]) + "\n\n" + table(["hash the user brought", "first sign-in (verify + rehash to argon2id)", `later sign-ins (argon2id, median of ${repeats})`], rows) +
        `\n\nRelease build, SQLite file in WAL mode, one process, on the machine's cores with nothing else running in this section. Each import line has an id kept as the \`sub\`, a name, roles and a claim; the import checks every line (fields, the hash's format and cost, duplicates, users already there) before one transaction writes them all, and the second run finds every user there and writes nothing. Sign-in times are one \`POST /auth/login\` over loopback, the password hash's verification being nearly all of it; the hashes were made by Python's bcrypt, argon2-cffi and hashlib with ${smoke ? "their lowest costs (smoke run)" : "the costs apps use (bcrypt 12, argon2-cffi's defaults, scrypt 2^15, Django's 720,000 PBKDF2 rounds)"}. The first sign-in pays for the foreign hash and one argon2id hash (OWASP's m = 19 MiB, t = 2, p = 1); an imported argon2id hash is kept as it is.`,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
