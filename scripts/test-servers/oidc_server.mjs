// Test OpenID Connect provider for ixp integration tests (npm `oidc-provider`).
//
// No browser needed: GET /interaction/:uid approves at once. The login step signs in
// the account named by the authorization request's `login_hint` (default "ixp-user");
// the consent step grants every scope/claim the client asked for. A client that
// follows the redirects and keeps the cookies ends at redirect_uri?code=...&state=...
// login_hint=deny makes the provider answer redirect_uri?error=access_denied instead.
//
// Env: IXP_OIDC_HOST (127.0.0.1), IXP_OIDC_PORT (9400), IXP_OIDC_ISSUER
// (http://HOST:PORT), IXP_TEST_SERVERS_DIR (<repo>/.test-servers, where
// node_modules/oidc-provider is installed).
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const serversDir = process.env.IXP_TEST_SERVERS_DIR || resolve(here, '..', '..', '.test-servers');
const { default: Provider } = await import(
  pathToFileURL(join(serversDir, 'node_modules', 'oidc-provider', 'lib', 'index.js')).href);

const host = process.env.IXP_OIDC_HOST || '127.0.0.1';
const port = Number(process.env.IXP_OIDC_PORT || 9400);
const issuer = process.env.IXP_OIDC_ISSUER || `http://${host}:${port}`;

// Fresh signing keys each start (clients must fetch the JWKS; nothing is persisted).
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });

const accounts = new Map(); // accountId -> claims
function claimsFor(sub) {
  return {
    sub,
    name: `Test User ${sub}`,
    preferred_username: sub,
    email: `${sub}@example.test`,
    email_verified: true,
  };
}

const configuration = {
  clients: [
    {
      // Confidential web client: HTTP Basic client auth (client_secret_basic only), PKCE required too.
      client_id: 'ixp-web',
      client_secret: 'ixp-web-secret',
      redirect_uris: ['http://127.0.0.1:9401/callback', 'http://localhost:9401/callback'],
      grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      scope: 'openid profile email offline_access api:read api:write',
    },
    {
      // Public native client: no secret, PKCE. Loopback redirect: any port on 127.0.0.1 (RFC 8252).
      client_id: 'ixp-native',
      application_type: 'native',
      redirect_uris: ['http://127.0.0.1/callback'],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    },
  ],
  pkce: { required: () => true }, // every authorization request must carry an S256 code_challenge
  scopes: ['openid', 'profile', 'email', 'offline_access', 'api:read', 'api:write'],
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
  },
  conformIdTokenClaims: false, // put the requested profile/email claims into the id_token as well
  findAccount(ctx, id) {
    if (!accounts.has(id)) accounts.set(id, claimsFor(id));
    return { accountId: id, async claims() { return accounts.get(id); } };
  },
  issueRefreshToken: async (ctx, client, code) =>
    client.grantTypeAllowed('refresh_token') && code.scopes.has('openid'),
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  jwks: { keys: [{ ...rsa, kid: 'ixp-rs256', use: 'sig', alg: 'RS256' }, { ...ec, kid: 'ixp-es256', use: 'sig', alg: 'ES256' }] },
  ttl: { AccessToken: 3600, AuthorizationCode: 600, IdToken: 3600, RefreshToken: 86400, Interaction: 600, Session: 86400, Grant: 86400, ClientCredentials: 3600 },
};

const provider = new Provider(issuer, configuration);
provider.proxy = false;

// Headless interaction: approve login, then consent, with no page in between.
provider.use(async (ctx, next) => {
  const m = ctx.method === 'GET' && /^\/interaction\/([^/]+)$/.exec(ctx.path);
  if (!m) return next();
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  const { prompt, params, session } = details;
  let result;
  if (params.login_hint === 'deny') {
    result = { error: 'access_denied', error_description: 'denied by login_hint=deny' };
  } else if (prompt.name === 'login') {
    result = { login: { accountId: String(params.login_hint || 'ixp-user') } };
  } else if (prompt.name === 'consent') {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const d = prompt.details;
    if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
    if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
    if (d.missingResourceScopes) {
      for (const [indicator, scopes] of Object.entries(d.missingResourceScopes)) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
    }
    result = { consent: { grantId: await grant.save() } };
  } else {
    result = { error: 'invalid_request', error_description: `unsupported prompt ${prompt.name}` };
  }
  const redirectTo = await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: false });
  ctx.status = 303;
  ctx.redirect(redirectTo);
});

provider.listen(port, host, () => {
  console.log(`oidc-provider listening on ${host}:${port} issuer=${issuer}`);
});
