// The API examples (examples/): Express, Koa and Fastify with tokenwarden/verify, axum with the
// crate tokenwarden-dpop, each on an origin of its own. The page (on API_AUTH) signs in and
// calls them across origins with auth.fetch, DPoP-bound; the test then plays the thief with
// what the browser sent (requests captured before they left, so their proofs are unused).
import { expect, test, type Page } from "@playwright/test";
import { newUser, openTab, sleep } from "./helpers";
import { API_AUTH, APIS } from "./playwright.config";

type Sent = Record<string, string>;

/** auth.fetch(url) in the page: its status and JSON body. */
const call = (page: Page, url: string) =>
  page.evaluate(async (u) => {
    const r = await (window as any).auth.fetch(u);
    return { status: r.status, body: await r.json().catch(() => null) };
  }, url);

/** What auth.fetch would send to `url`, held back (aborted) so that its proof stays unused. */
async function capture(page: Page, url: string): Promise<Sent> {
  let sent: Sent | undefined;
  const match = (u: URL) => u.href === url;
  await page.route(match, async (route) => {
    sent = await route.request().allHeaders();
    await route.abort();
  });
  await page.evaluate((u) => (window as any).auth.fetch(u).catch(() => null), url);
  await page.unroute(match);
  expect(sent?.authorization, "the request carried a token").toMatch(/^DPoP /);
  return sent!;
}

/** The thief: the same request, sent from Node (outside the page) with `headers`. */
async function replay(url: string, sent: Sent) {
  const res = await fetch(url, { headers: { authorization: sent.authorization, dpop: sent.dpop } });
  return { status: res.status, challenge: res.headers.get("www-authenticate") ?? "", body: await res.json() };
}

for (const [name, api] of Object.entries(APIS)) {
  test(`${name}: the API accepts the page's DPoP requests, refuses a replay and a forgery, and a logged-out token within a second`, async ({
    context,
  }) => {
    const page = await openTab(context, { allowedOrigins: Object.values(APIS) }, API_AUTH);
    await page.evaluate((u) => (window as any).auth.login(u), await newUser(API_AUTH));
    const sub = await page.evaluate(() => (window as any).auth.claims().sub);

    // Across origins, with CORS: 200 and the verified claims.
    // In the order they left (each one's headers are read later: pushing after an await could
    // put the nonce-less first try last).
    const sentOnce: Promise<Sent>[] = [];
    page.on("request", (r) => {
      if (r.url() === `${api}/orders` && r.method() === "GET") sentOnce.push(r.allHeaders());
    });
    const ok = await call(page, `${api}/orders`);
    expect(ok).toEqual({ status: 200, body: { user: sub, orders: [] } });

    // Every method of a JSON API passes the preflight (a DELETE here: no such route, so the
    // API's own 404, readable across origins), not a network error.
    const deleted = await page.evaluate(async (u) => {
      try {
        return (await (window as any).auth.fetch(u, { method: "DELETE" })).status;
      } catch (e) {
        return String(e);
      }
    }, `${api}/orders/1`);
    expect(deleted).toBe(404);

    // The request that got the 200 (after a use_dpop_nonce answer if the page had no nonce of
    // this origin yet), replayed as sent: its proof's jti was seen (RFC 9449 §11.1).
    await expect.poll(() => sentOnce.length).toBeGreaterThan(0);
    const replayed = await replay(`${api}/orders`, await sentOnce[sentOnce.length - 1]);
    expect(replayed.status).toBe(401);
    expect(replayed.body.error).toBe("invalid_dpop_proof");
    expect(replayed.challenge).toContain('error="invalid_dpop_proof"');

    // A forged token (its payload changed, the signature kept): invalid_token.
    const fresh = await capture(page, `${api}/orders?forge`);
    const [scheme, jwt] = fresh.authorization.split(" ");
    const [h, p, s] = jwt.split(".");
    const claims = JSON.parse(Buffer.from(p, "base64url").toString());
    const forged = Buffer.from(JSON.stringify({ ...claims, sub: "someone-else" })).toString("base64url");
    const answer = await replay(`${api}/orders`, { ...fresh, authorization: `${scheme} ${h}.${forged}.${s}` });
    expect(answer.status).toBe(401);
    expect(answer.body.error).toBe("invalid_token");
    expect(answer.challenge).toContain('error="invalid_token"');

    // An unused request works from anywhere while the session lives (what DPoP cannot stop
    // within a proof's minute)...
    const before = await capture(page, `${api}/orders?before`);
    expect((await replay(`${api}/orders`, before)).status).toBe(200);
    // ...and not a second after the logout: the API heard it on the revocation feed.
    const after = await capture(page, `${api}/orders?after`);
    await page.evaluate(() => (window as any).auth.logout());
    await sleep(1_000);
    const refused = await replay(`${api}/orders`, after);
    expect(refused.status).toBe(401);
    expect(refused.body.error).toBe("invalid_token");
    expect(refused.challenge).toContain('error="invalid_token"');
    expect(refused.body.error_description).toBe("the token has been revoked");
    await page.close();
  });
}
