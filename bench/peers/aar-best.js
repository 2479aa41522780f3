// axios + axios-auth-refresh in its best configuration for a storm: `deduplicateRefresh: false`.
// With the default (true), a 401 that arrives while a refresh is in flight is rejected
// (axios-auth-refresh #307); with false, every 401 passes the interceptor and joins the one
// refresh call it caches while in flight, and its retry picks up the new token.
import { installPeer } from "./aar-setup.js";

installPeer("axios + axios-auth-refresh (best configuration)", { deduplicateRefresh: false });
