// A Koa API that accepts tokenwarden's access tokens (examples/README.md): node server.mjs
import cors from "@koa/cors";
import Router from "@koa/router";
import Koa from "koa";
import { CORS, createVerifier } from "tokenwarden/verify";

// Set but empty (`SPA_ORIGIN=` in a compose file) is unset: an empty CORS origin is `*`.
const env = (name, fallback) => process.env[name] || fallback;
const verifier = await createVerifier({
  authServer: env("AUTH_SERVER", "http://127.0.0.1:8080"),
  publicOrigin: env("PUBLIC_ORIGIN", "http://127.0.0.1:3002"), // this API, as browsers reach it
  nonceSecret: process.env.NONCE_SECRET, // the auth server's --dpop-nonce-secret
  revocationToken: process.env.REVOCATION_TOKEN, // its --revocation-feed-token-file's
});

const router = new Router();
router.get("/orders", (ctx) => (ctx.body = { user: ctx.state.auth.sub, orders: [] }));
const app = new Koa();
app.use(cors({ origin: env("SPA_ORIGIN", "http://127.0.0.1:8080"), allowMethods: CORS.methods, allowHeaders: CORS.allowedHeaders, exposeHeaders: CORS.exposedHeaders }));
app.use(verifier.koa()); // ctx.state.auth: the verified claims
app.use(router.routes());

const server = app.listen(Number(env("PORT", 3002)), env("HOST", "127.0.0.1"));
process.on("SIGTERM", () => (verifier.close(), server.close()));
