// An Express API that accepts tokenwarden's access tokens (examples/README.md): node server.mjs
import cors from "cors";
import express from "express";
import { CORS, createVerifier } from "tokenwarden/verify";

// Set but empty (`SPA_ORIGIN=` in a compose file) is unset: an empty CORS origin is `*`.
const env = (name, fallback) => process.env[name] || fallback;
const verifier = await createVerifier({
  authServer: env("AUTH_SERVER", "http://127.0.0.1:8080"),
  publicOrigin: env("PUBLIC_ORIGIN", "http://127.0.0.1:3001"), // this API, as browsers reach it
  nonceSecret: process.env.NONCE_SECRET, // the auth server's --dpop-nonce-secret
  revocationToken: process.env.REVOCATION_TOKEN, // its --revocation-feed-token-file's
});

const app = express();
app.use(cors({ origin: env("SPA_ORIGIN", "http://127.0.0.1:8080"), ...CORS }));
app.use(verifier.express()); // req.auth: the verified claims
app.get("/orders", (req, res) => res.json({ user: req.auth.sub, orders: [] }));

const server = app.listen(Number(env("PORT", 3001)), env("HOST", "127.0.0.1"));
process.on("SIGTERM", () => (verifier.close(), server.close()));
