// The README's and API.md's set-up, typed against the frameworks' own declarations (@types/express,
// @types/cors, @types/koa, @types/koa__cors from tests/verify/package.json; Fastify's and
// @fastify/cors's own): `tsc -p tests/verify/tsconfig.frameworks.json` must pass. The structural types of tokenwarden/verify once refused all three
// adapters (Node's `headersDistinct` holds `undefined`) and every `...CORS` (readonly lists).
import cors from "cors";
import express from "express";
import Koa from "koa";
import koaCors from "@koa/cors";
import Fastify from "fastify";
import fastifyCors from "@fastify/cors";
import { CORS, createVerifier, type AccessClaims } from "tokenwarden/verify";

export async function apps(): Promise<void> {
  const verifier = await createVerifier({ authServer: "https://auth.example.com" });
  const origin = "https://app.example.com";

  const app = express();
  app.use(cors({ origin, ...CORS }));
  app.use(verifier.express());
  app.get("/orders", (req, res) => {
    const claims: AccessClaims | undefined = req.auth;
    res.json({ user: claims?.sub });
  });

  const koa = new Koa();
  koa.use(koaCors({ origin, allowMethods: CORS.methods, allowHeaders: CORS.allowedHeaders, exposeHeaders: CORS.exposedHeaders }));
  koa.use(verifier.koa());

  const fastify = Fastify();
  await fastify.register(fastifyCors, { origin, ...CORS });
  fastify.addHook("onRequest", verifier.fastify());
}
