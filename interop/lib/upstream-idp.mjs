// A real upstream OpenID provider for Keygate's OIDC connector: oidc-provider 9 (OpenID-certified)
// in this process, on 127.0.0.1, with its development login and consent pages (plain HTML forms
// that `loginViaForm` can walk: any password is accepted, the login names the account).
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import Provider from 'oidc-provider';
import * as jose from 'jose';

/** A private signing JWK for the provider. `withAlg: false` leaves `alg` out (RFC 7517 makes it optional). */
export async function signingJwk({ alg = 'RS256', withAlg = true } = {}) {
  const { privateKey } = await jose.generateKeyPair(alg, { extractable: true });
  const jwk = await jose.exportJWK(privateKey);
  jwk.kid = `upstream-${randomBytes(4).toString('hex')}`;
  jwk.use = 'sig';
  if (withAlg) jwk.alg = alg;
  return jwk;
}

/**
 * Start oidc-provider at http://127.0.0.1:<port> with one confidential client (client_secret_basic).
 *
 * accounts: {id: claims} (mutable afterwards through the returned `accounts` Map: claims are read at
 * every token issue, refreshes included).
 * Returns {issuer, port, provider, accounts, counts, events, requests, stop(), start()}: `counts` has
 * the successful grants per grant_type and the failed ones (`errors`), `requests` every request's
 * "METHOD /path"; stop() closes the listener
 * (the provider's in-memory grants survive, start() listens on the same port again).
 */
export async function startUpstream({
  port,
  client,
  accounts,
  jwk,
  // scope -> claims it releases (oidc-provider's `claims` configuration)
  claims = {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  conformIdTokenClaims = false,
  rotateRefreshToken = true,
  clockTolerance = 5,
}) {
  const issuer = `http://127.0.0.1:${port}`;
  const store = new Map(Object.entries(structuredClone(accounts)));
  const counts = { authorization_code: 0, refresh_token: 0, errors: [] };
  const events = [];
  const requests = []; // "METHOD /path" of every request, in order
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: client.id,
        client_secret: client.secret,
        redirect_uris: client.redirectUris,
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
        id_token_signed_response_alg: jwk.alg ?? 'RS256',
      },
    ],
    async findAccount(_ctx, id) {
      if (!store.has(id)) return undefined;
      return {
        accountId: id,
        async claims() {
          return { sub: id, ...structuredClone(store.get(id)) };
        },
      };
    },
    claims,
    scopes: [...new Set(['openid', 'offline_access', ...Object.keys(claims)])],
    features: { devInteractions: { enabled: true } },
    // PKCE required of every client, confidential ones included: Keygate must send it.
    pkce: { required: () => true },
    // false: the user's claims go into the ID token of the code flow too (as Keycloak and Dex do);
    // true (oidc-provider's default) leaves them to the userinfo endpoint.
    conformIdTokenClaims,
    rotateRefreshToken,
    clockTolerance,
    // Explicit lifetimes (seconds): the defaults print a notice each.
    ttl: { AccessToken: 600, AuthorizationCode: 60, IdToken: 600, Interaction: 600, Session: 3600, Grant: 86_400, RefreshToken: 86_400 },
    jwks: { keys: [jwk] },
    cookies: { keys: [randomBytes(16).toString('hex')] },
  });
  provider.on('grant.success', (ctx) => {
    const type = ctx.oidc.params?.grant_type;
    counts[type] = (counts[type] ?? 0) + 1;
    events.push({ at: Date.now(), event: 'grant.success', grant_type: type });
  });
  provider.on('grant.error', (ctx, err) => {
    const type = ctx.oidc?.params?.grant_type;
    counts.errors.push({ grant_type: type, error: err.error ?? err.message, description: err.error_description });
    events.push({ at: Date.now(), event: 'grant.error', grant_type: type, error: err.error ?? err.message });
  });
  for (const name of ['authorization.error', 'server_error']) {
    provider.on(name, (_ctx, err) => events.push({ at: Date.now(), event: name, error: err.error ?? err.message, description: err.error_description }));
  }

  let server;
  const start = () =>
    new Promise((resolve, reject) => {
      const app = provider.callback();
      server = http.createServer((req, res) => {
        requests.push(`${req.method} ${req.url.split('?')[0]}`);
        app(req, res);
      });
      server.keepAliveTimeout = 1_000;
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve());
    });
  const stop = () =>
    new Promise((resolve) => {
      if (!server?.listening) return resolve();
      server.close(() => resolve());
      server.closeAllConnections();
    });
  await start();
  return { issuer, port, provider, accounts: store, counts, events, requests, start, stop };
}
