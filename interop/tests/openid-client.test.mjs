// openid-client v6 (an OpenID-certified relying party) against the real keygate binary.
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import * as client from 'openid-client';
import * as jose from 'jose';
import {
  APP_CLIENT,
  JANE,
  LoginError,
  cleanupDir,
  freePort,
  hashPassword,
  keygateAvailable,
  loginViaForm,
  standardConfig,
  startKeygate,
} from '../lib/keygate.mjs';
import { explained, oauthErrorCode } from '../lib/openid.mjs';

const available = await keygateAvailable();
const SCOPE = 'openid email profile groups offline_access';

describe('openid-client v6 against keygate', { skip: !available && 'keygate binary missing (build it or set KEYGATE_BIN)' }, () => {
  let kg;
  let redirectUri;
  let jwks;

  before(async () => {
    const rport = await freePort();
    redirectUri = `http://127.0.0.1:${rport}/callback`;
    const passwordHash = await hashPassword(JANE.password);
    kg = await startKeygate({
      configYaml: (o) => standardConfig({ ...o, passwordHash, redirectURIs: [redirectUri] }),
    });
  });

  after(async () => {
    if (kg) {
      await kg.stop();
      await cleanupDir(kg.dir);
    }
  });

  afterEach((t) => {
    if (kg && t.passed === false) kg.dumpLog(`after failed test "${t.name}"`);
  });

  async function configFor(auth) {
    const config = await explained(
      client.discovery(
        new URL(kg.issuer),
        APP_CLIENT.id,
        { client_secret: APP_CLIENT.secret },
        auth === 'post' ? client.ClientSecretPost(APP_CLIENT.secret) : client.ClientSecretBasic(APP_CLIENT.secret),
        { execute: [client.allowInsecureRequests] },
      ),
    );
    // Verify ID token JWS signatures against the provider's jwks_uri (off by default in v6).
    client.enableNonRepudiationChecks(config);
    return config;
  }

  async function verifyIdToken(idToken, { audience = APP_CLIENT.id } = {}) {
    jwks ??= jose.createRemoteJWKSet(new URL((await fetchMeta()).jwks_uri));
    const { payload, protectedHeader } = await jose.jwtVerify(idToken, jwks, { issuer: kg.issuer, audience });
    return { payload, protectedHeader };
  }

  async function fetchMeta() {
    const res = await fetch(new URL('.well-known/openid-configuration', kg.issuer));
    assert.equal(res.status, 200);
    return res.json();
  }

  async function codeFlow(config, { scope = SCOPE, extra = {} } = {}) {
    const codeVerifier = client.randomPKCECodeVerifier();
    const codeChallenge = await client.calculatePKCECodeChallenge(codeVerifier);
    const state = client.randomState();
    const nonce = client.randomNonce();
    const authUrl = client.buildAuthorizationUrl(config, {
      redirect_uri: redirectUri,
      scope,
      state,
      nonce,
      code_challenge: codeChallenge,
      code_challenge_method: 'S256',
      ...extra,
    });
    const callback = await loginViaForm(authUrl.href, JANE.login, JANE.password);
    const cb = new URL(callback);
    assert.ok(cb.searchParams.get('code'), `redirect carries a code: ${callback}`);
    assert.equal(cb.searchParams.get('state'), state);
    const tokens = await explained(
      client.authorizationCodeGrant(config, cb, {
        pkceCodeVerifier: codeVerifier,
        expectedState: state,
        expectedNonce: nonce,
        idTokenExpected: true,
      }),
    );
    return { tokens, nonce, state };
  }

  test('discovery document is consistent', async () => {
    const meta = await fetchMeta();
    assert.equal(meta.issuer, kg.issuer);
    for (const k of ['authorization_endpoint', 'token_endpoint', 'jwks_uri', 'userinfo_endpoint']) {
      assert.ok(meta[k], `discovery has ${k}`);
      assert.ok(meta[k].startsWith(kg.issuer), `${k}=${meta[k]} lives under the issuer`);
    }
    assert.ok(meta.response_types_supported.includes('code'));
    assert.ok(meta.code_challenge_methods_supported?.includes('S256'), 'advertises PKCE S256');
    const keys = await (await fetch(meta.jwks_uri)).json();
    assert.ok(Array.isArray(keys.keys) && keys.keys.length > 0, 'JWKS has keys');
  });

  test('authorization code + PKCE with client_secret_basic, userinfo, refresh', async () => {
    const config = await configFor('basic');
    const { tokens, nonce } = await codeFlow(config);

    assert.ok(tokens.access_token, 'access_token');
    assert.equal(String(tokens.token_type).toLowerCase(), 'bearer');
    assert.ok(tokens.id_token, 'id_token');
    assert.ok(tokens.refresh_token, 'offline_access gives a refresh_token');

    const claims = tokens.claims();
    assert.equal(claims.iss, kg.issuer);
    assert.ok(typeof claims.sub === 'string' && claims.sub.length > 0, 'sub');
    const aud = [].concat(claims.aud);
    assert.ok(aud.includes(APP_CLIENT.id), `aud ${JSON.stringify(claims.aud)} contains the client id`);
    assert.equal(claims.nonce, nonce);
    assert.equal(claims.email, JANE.email);
    assert.equal(claims.email_verified, true);
    assert.ok(Array.isArray(claims.groups), `groups claim is an array: ${JSON.stringify(claims.groups)}`);
    assert.ok(claims.groups.includes('devs'), `groups ${JSON.stringify(claims.groups)} includes devs`);
    assert.ok(claims.groups.includes('staff'), `groups ${JSON.stringify(claims.groups)} includes staff (nested: staff > devs)`);
    assert.ok(claims.exp > Date.now() / 1000, 'exp in the future');
    assert.ok(claims.exp - claims.iat <= 600 + 5, 'exp honours idTokenTTL 10m');
    assert.ok(claims.name || claims.preferred_username, 'profile scope yields name or preferred_username');

    // One signature per answer: the access token is the ID token (a JWT with the same claims, as
    // Dex's access tokens are), verifiable against /keys; at_hash is then absent (optional in
    // the code flow, OIDC Core 3.1.3.6).
    assert.equal(claims.at_hash, undefined, 'no at_hash');
    assert.equal(tokens.access_token, tokens.id_token, 'access token is the ID token');
    await verifyIdToken(tokens.access_token);

    // UserInfo
    const userinfo = await explained(client.fetchUserInfo(config, tokens.access_token, claims.sub));
    assert.equal(userinfo.sub, claims.sub);
    assert.equal(userinfo.email, JANE.email);

    // Refresh: a NEW refresh token and a new, valid ID token for the same subject.
    const refreshed = await explained(client.refreshTokenGrant(config, tokens.refresh_token));
    assert.ok(refreshed.id_token, 'refresh returns an id_token');
    assert.ok(refreshed.refresh_token, 'refresh returns a refresh_token');
    assert.notEqual(refreshed.refresh_token, tokens.refresh_token, 'refresh token rotated');
    const rc = refreshed.claims();
    assert.equal(rc.sub, claims.sub);
    assert.equal(rc.iss, kg.issuer);
    assert.equal(rc.email, JANE.email);
    assert.ok(rc.groups?.includes('devs'), `refreshed groups ${JSON.stringify(rc.groups)}`);
    await verifyIdToken(refreshed.id_token);

    // The rotated refresh token works too.
    const again = await explained(client.refreshTokenGrant(config, refreshed.refresh_token));
    assert.ok(again.id_token);
    assert.notEqual(again.refresh_token, refreshed.refresh_token);
  });

  test('authorization code with client_secret_post and the kubernetes audience', async () => {
    const config = await configFor('post');
    const { tokens } = await codeFlow(config, {
      scope: 'openid email groups offline_access audience:server:client_id:kubernetes',
    });
    const claims = tokens.claims();
    const aud = [].concat(claims.aud);
    assert.ok(aud.includes('kubernetes'), `aud ${JSON.stringify(claims.aud)} contains kubernetes`);
    assert.ok(aud.includes(APP_CLIENT.id), `aud ${JSON.stringify(claims.aud)} contains the client`);
    assert.equal(claims.azp, APP_CLIENT.id, 'azp is the requesting client');
    assert.equal(claims.email, JANE.email);
    assert.ok(claims.groups?.includes('devs'));
    await verifyIdToken(tokens.id_token, { audience: 'kubernetes' });

    const refreshed = await explained(client.refreshTokenGrant(config, tokens.refresh_token));
    assert.notEqual(refreshed.refresh_token, tokens.refresh_token);
    const rc = refreshed.claims();
    assert.ok([].concat(rc.aud).includes('kubernetes'), 'refreshed token keeps aud kubernetes');
    await verifyIdToken(refreshed.id_token, { audience: 'kubernetes' });
  });

  test('wrong password does not yield a code', async () => {
    const config = await configFor('basic');
    const authUrl = client.buildAuthorizationUrl(config, {
      redirect_uri: redirectUri,
      scope: SCOPE,
      state: client.randomState(),
      nonce: client.randomNonce(),
      code_challenge: await client.calculatePKCECodeChallenge(client.randomPKCECodeVerifier()),
      code_challenge_method: 'S256',
    });
    let outcome;
    try {
      outcome = await loginViaForm(authUrl.href, JANE.login, 'not-the-password');
    } catch (err) {
      outcome = err;
    }
    if (!(outcome instanceof LoginError)) {
      const loc = typeof outcome === 'string' ? new URL(outcome) : null;
      assert.fail(`wrong password led to ${outcome}${loc?.searchParams.get('code') ? ' (WITH A CODE)' : ''}`);
    }
    assert.ok([200, 401, 403].includes(outcome.status), `answered the form again or 401, got ${outcome.status}`);
  });

  test('a wrong client secret is rejected at the token endpoint', async () => {
    const config = await client.discovery(
      new URL(kg.issuer),
      APP_CLIENT.id,
      { client_secret: 'wrong-secret' },
      client.ClientSecretBasic('wrong-secret'),
      { execute: [client.allowInsecureRequests] },
    );
    const codeVerifier = client.randomPKCECodeVerifier();
    const state = client.randomState();
    const authUrl = client.buildAuthorizationUrl(config, {
      redirect_uri: redirectUri,
      scope: 'openid email',
      state,
      code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
      code_challenge_method: 'S256',
    });
    const cb = new URL(await loginViaForm(authUrl.href, JANE.login, JANE.password));
    await assert.rejects(
      client.authorizationCodeGrant(config, cb, { pkceCodeVerifier: codeVerifier, expectedState: state }),
      (err) => {
        // ResponseBodyError carries .error; a 401 with WWW-Authenticate gives WWWAuthenticateChallengeError.
        const code = oauthErrorCode(err);
        const detail = `${err.name}: ${err.message} status=${err.status} cause=${JSON.stringify(err.cause ?? null)}`;
        assert.ok([400, 401].includes(err.status), `400/401 expected, ${detail}`);
        if (code !== undefined) assert.equal(code, 'invalid_client', detail);
        return true;
      },
    );
  });
});
