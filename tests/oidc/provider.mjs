// A real OpenID provider for the tests: panva's oidc-provider (OpenID Certified), on loopback.
//
//   node tests/oidc/provider.mjs PORT RP_ORIGIN [NAME]
//
// One client, `tokenwarden-test` (secret `tokenwarden-test-secret-0123456789`), whose redirect
// URI is RP_ORIGIN/auth/oidc/NAME/callback and whose back-channel logout URI is
// RP_ORIGIN/auth/oidc/NAME/backchannel-logout (NAME: `idp` by default); RP_ORIGIN may list
// several origins separated by commas (a fleet). Any login name signs in (its devInteractions
// login and consent forms): the account is the login name, its email `<login>@idp.test`,
// verified. Prints `ready <issuer>` once listening, and `backchannel <ok|error> ...` per
// logout token it sends.
import Provider from "oidc-provider";

const [port, rps, name = "idp"] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;
const origins = rps.split(",");
export const CLIENT_ID = "tokenwarden-test";
export const CLIENT_SECRET = "tokenwarden-test-secret-0123456789";

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      redirect_uris: origins.map((o) => `${o}/auth/oidc/${name}/callback`),
      // One URI per client: the first origin's (a fleet shares one database).
      backchannel_logout_uri: `${origins[0]}/auth/oidc/${name}/backchannel-logout`,
      backchannel_logout_session_required: true,
      grant_types: ["authorization_code"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_basic",
    },
  ],
  pkce: { required: () => true },
  claims: { openid: ["sub"], email: ["email", "email_verified"], profile: ["name"] },
  features: {
    devInteractions: { enabled: true },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: `${id}@idp.test`, email_verified: true, name: `IdP user ${id}` };
      },
    };
  },
  cookies: { keys: ["tokenwarden-test-cookie-key"] },
  // Its SSRF guard refuses loopback targets; the relying party here is on loopback.
  fetch(url, { dispatcher, ...options }) {
    return globalThis.fetch(url, options);
  },
});
provider.on("backchannel.success", (client, accountId, sid) => console.log(`backchannel ok ${accountId} ${sid}`));
provider.on("backchannel.error", (client, error) => console.log(`backchannel error ${error.message}`));
provider.listen(Number(port), "127.0.0.1", () => console.log(`ready ${issuer}`));
