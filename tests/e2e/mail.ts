// The messages the SMTP server of the e2e run (aiosmtpd, playwright.config.ts) delivered, read
// from its Maildir as a person reads their inbox.
import fs from "node:fs";
import path from "node:path";
import { expect } from "@playwright/test";
import { MAILDIR } from "./playwright.config";
import { sleep } from "./helpers";

/** The messages delivered to `email`, oldest first (raw text). */
export function mailsTo(email: string): string[] {
  const dir = path.join(MAILDIR, "new");
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir)
    .map((f) => path.join(dir, f))
    .sort((a, b) => fs.statSync(a).mtimeMs - fs.statSync(b).mtimeMs)
    .map((f) => fs.readFileSync(f, "utf8"))
    .filter((m) => new RegExp(`^To: ${email.replace(/[.]/g, "\\.")}\\s*$`, "m").test(m));
}

/** Waits for the `n`th message to `email` and returns its code (the line of digits alone). */
export async function mailedCode(email: string, n: number): Promise<string> {
  for (let i = 0; i < 200; i++) {
    const mails = mailsTo(email);
    if (mails.length >= n) {
      const code = /^\s*(\d{6,8})\s*$/m.exec(mails[n - 1])?.[1];
      expect(code, mails[n - 1]).toBeTruthy();
      return code!;
    }
    await sleep(50);
  }
  throw new Error(`message ${n} to ${email} did not arrive`);
}
