// A real OpenID provider for the tests: panva's oidc-provider (8.x, from
// the npm registry, installed into target/oidc-node by scripts/test or by
// the test itself), on loopback, with one confidential client for
// strongroom, the device flow on and the development login form.
//
//   node tests/oidc/provider.mjs PORT CLIENT_SECRET_FILE
//
// Prints "listening <issuer>" once it serves. Any login name signs in;
// "alice" is in the groups ops and dev, anyone else in dev only.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
import path from "node:path";

const [port, secretFile] = process.argv.slice(2);
const nodeModules = process.env.OIDC_NODE_MODULES;
const require = createRequire(path.join(nodeModules, "noop.js"));
const { default: Provider } = await import(pathToFileURL(require.resolve("oidc-provider")).href);

const issuer = `http://127.0.0.1:${port}`;
const secret = readFileSync(secretFile, "utf8").trim();
const configuration = {
  clients: [{
    client_id: "strongroom",
    client_secret: secret,
    redirect_uris: [
      "http://127.0.0.1:8250/oidc/callback",
      "http://127.0.0.1/oidc/callback",
      "http://127.0.0.1/ui/",
      ...(process.env.OIDC_EXTRA_REDIRECTS || "").split(",").filter(Boolean),
    ],
    grant_types: ["authorization_code", "urn:ietf:params:oauth:grant-type:device_code"],
    response_types: ["code"],
    token_endpoint_auth_method: "client_secret_basic",
    // Native (RFC 8252): a loopback redirect URI matches on any port, as
    // the CLI's listener takes whatever port it is given.
    application_type: "native",
  }, {
    // Another application at the same provider: its codes are not ours.
    client_id: "other",
    client_secret: "other-client-secret",
    redirect_uris: ["http://127.0.0.1:8250/oidc/callback"],
    grant_types: ["authorization_code"],
    response_types: ["code"],
    token_endpoint_auth_method: "client_secret_basic",
  }],
  features: { devInteractions: { enabled: true }, deviceFlow: { enabled: true } },
  pkce: { required: () => true, methods: ["S256"] },
  claims: { openid: ["sub"], email: ["email"], profile: ["name", "groups"] },
  conformIdTokenClaims: false,
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          email: `${id}@example.test`,
          name: id,
          groups: id === "alice" ? ["ops", "dev"] : ["dev"],
        };
      },
    };
  },
  cookies: { keys: ["strongroom-test-cookie-key"] },
};
const provider = new Provider(issuer, configuration);
provider.listen(Number(port), "127.0.0.1", () => {
  console.log(`listening ${issuer}`);
});
