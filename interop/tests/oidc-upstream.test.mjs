// Keygate's OIDC connector (DexProvider type OIDC) against a real upstream identity provider:
// oidc-provider 9 (OpenID-certified) in this process, its development login and consent pages
// walked with plain HTTP. The app signs in at Keygate, Keygate sends the browser upstream (state =
// Keygate's request id), the upstream comes back to `<issuer>callback`, Keygate redirects to the
// app with a code. Refreshes at Keygate go to the upstream with its refresh token (rotated there),
// so group changes upstream show in the next ID token. Refusals (allowedGroups, an unverified
// email, a user gone upstream) and an unreachable upstream are clear pages/errors, never a 500.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import * as jose from 'jose';
import {
  APP_CLIENT,
  LoginError,
  b64url,
  cleanupDir,
  freePort,
  keygateAvailable,
  keygateMetrics,
  loginViaForm,
  pkcePair,
  startKeygate,
} from '../lib/keygate.mjs';
import { signingJwk, startUpstream } from '../lib/upstream-idp.mjs';

const available = await keygateAvailable();
const SCOPE = 'openid email profile groups offline_access';
const UPSTREAM_CLIENT = { id: 'keygate', secret: 'keygate-secret' };
const UPSTREAM_SCOPES = ['openid', 'profile', 'email', 'groups', 'offline_access'];

const KNOWN_BUGS = ['an upstream whose JWKS key has no "alg"', 'after an upstream outage the client can retry'];

const ALICE = {
  email: 'alice@example.com',
  email_verified: true,
  name: 'Alice Liddell',
  preferred_username: 'alice',
  groups: ['devs', 'ops'],
};

/** Dex's `sub`: base64url(protobuf {1: user id, 2: connector id}). */
function dexSubject(userId, connectorId) {
  const parts = [];
  for (const [field, value] of [
    [1, userId],
    [2, connectorId],
  ]) {
    const bytes = Buffer.from(value, 'utf8');
    const head = [(field << 3) | 2];
    let len = bytes.length;
    while (len >= 0x80) {
      head.push((len & 0x7f) | 0x80);
      len >>= 7;
    }
    head.push(len);
    parts.push(Buffer.from(head), bytes);
  }
  return Buffer.concat(parts).toString('base64url');
}

function keygateConfig({ issuer, port, dir }, { upstreamIssuer, redirectUri, oidcExtra = '' }) {
  return `apiVersion: keygate.io/v1alpha1
kind: KeygateConfig
spec:
  issuer: ${issuer}
  listen: 127.0.0.1:${port}
  storage: {type: sqlite, path: ${JSON.stringify(path.join(dir, 'keygate.db'))}}
  idTokenTTL: 10m
  refreshTokens: {reuseInterval: 0s}
---
apiVersion: deckhouse.io/v1
kind: DexClient
metadata: {name: app, namespace: web}
spec: {redirectURIs: [${JSON.stringify(redirectUri)}], secret: ${APP_CLIENT.secret}}
---
apiVersion: deckhouse.io/v1
kind: DexProvider
metadata: {name: upstream}
spec:
  type: OIDC
  displayName: Upstream SSO
  oidc:
    issuer: ${upstreamIssuer}
    clientID: ${UPSTREAM_CLIENT.id}
    clientSecret: ${UPSTREAM_CLIENT.secret}
    scopes: [${UPSTREAM_SCOPES.join(', ')}]
    promptType: consent
    insecureSkipEmailVerified: false
${oidcExtra.replace(/^/gm, '    ')}
`;
}

const basic = (id, secret) =>
  'Basic ' + Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64');

async function tokenRequest(issuer, params) {
  const started = performance.now();
  const res = await fetch(new URL('token', issuer), {
    method: 'POST',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      accept: 'application/json',
      authorization: basic(APP_CLIENT.id, APP_CLIENT.secret),
    },
    body: new URLSearchParams(params).toString(),
  });
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, json, text, ms: performance.now() - started };
}

/** GET without following redirects: {status, location, type, body}. */
async function get(url) {
  const res = await fetch(url, { redirect: 'manual', headers: { accept: 'text/html' } });
  return {
    status: res.status,
    location: res.headers.get('location'),
    type: res.headers.get('content-type') ?? '',
    body: await res.text(),
  };
}

const pageText = (html) =>
  html
    .replace(/<style[\s\S]*?<\/style>|<script[\s\S]*?<\/script>/gi, ' ')
    .replace(/<[^>]+>/g, ' ')
    .replace(/&#39;|&#x27;/g, "'")
    .replace(/&quot;/g, '"')
    .replace(/&amp;/g, '&')
    .replace(/\s+/g, ' ')
    .trim();

describe('Keygate OIDC connector with oidc-provider 9 as the upstream', {
  skip: !available && 'keygate binary missing (build it or set KEYGATE_BIN)',
}, () => {
  let up;
  let kg; // the main keygate
  let kgAllowed; // allowedGroups: [admins]
  const started = [];
  let ports;
  let redirectUri;
  const jwksByIssuer = new Map();
  const upstreams = [];
  let session; // the app's tokens from the main keygate

  before(async () => {
    ports = { up: await freePort(), main: await freePort(), allowed: await freePort(), fresh: await freePort() };
    redirectUri = `http://127.0.0.1:${await freePort()}/callback`;
    const callbacks = [ports.main, ports.allowed, ports.fresh].map((p) => `http://127.0.0.1:${p}/callback`);
    up = await startUpstream({
      port: ports.up,
      client: { ...UPSTREAM_CLIENT, redirectUris: callbacks },
      accounts: {
        alice: ALICE,
        bob: { email: 'bob@example.com', email_verified: false, name: 'Bob', preferred_username: 'bob', groups: ['devs'] },
        carol: { email: 'carol@example.com', email_verified: true, name: 'Carol', preferred_username: 'carol', groups: ['devs'] },
      },
      jwk: await signingJwk(),
    });
    kg = await startKeygate({
      port: ports.main,
      configYaml: (o) => keygateConfig(o, { upstreamIssuer: up.issuer, redirectUri }),
    });
    started.push(kg);
  });

  after(async () => {
    for (const k of started) {
      await k.stop();
      await cleanupDir(k.dir);
    }
    for (const u of [up, ...upstreams]) await u?.stop();
  });

  afterEach((t) => {
    if (t.passed === false && !KNOWN_BUGS.some((name) => t.name.startsWith(name))) {
      for (const k of started) k.dumpLog(`after failed test "${t.name}"`);
      for (const u of [up, ...upstreams]) {
        if (u) process.stderr.write(`upstream ${u.issuer} events: ${JSON.stringify(u.events)}\n`);
      }
    }
  });

  async function verifyIdToken(idToken, issuer = kg.issuer) {
    if (!jwksByIssuer.has(issuer)) jwksByIssuer.set(issuer, jose.createRemoteJWKSet(new URL('keys', issuer)));
    const { payload } = await jose.jwtVerify(idToken, jwksByIssuer.get(issuer), { issuer, audience: APP_CLIENT.id });
    return payload;
  }

  /** The app's authorization request at keygate, walked through the upstream's forms. */
  async function signIn(issuer, login, { rewrite } = {}) {
    const { verifier, challenge } = pkcePair();
    const state = b64url(randomBytes(12));
    const nonce = b64url(randomBytes(12));
    const authUrl = new URL('auth', issuer);
    for (const [k, v] of Object.entries({
      client_id: APP_CLIENT.id,
      redirect_uri: redirectUri,
      response_type: 'code',
      scope: SCOPE,
      state,
      nonce,
      code_challenge: challenge,
      code_challenge_method: 'S256',
    }))
      authUrl.searchParams.set(k, v);
    const trace = [];
    const t0 = performance.now();
    const location = new URL(await loginViaForm(authUrl.href, login, 'any-password', { trace, rewrite }));
    return { location, trace, state, nonce, verifier, ms: performance.now() - t0 };
  }

  /** One more upstream (its own key, claims, accounts) and a keygate of its own in front of it. */
  async function pair({ jwk, claims, accounts, conformIdTokenClaims, oidcExtra }) {
    const kport = await freePort();
    const u = await startUpstream({
      port: await freePort(),
      client: { ...UPSTREAM_CLIENT, redirectUris: [`http://127.0.0.1:${kport}/callback`] },
      accounts,
      jwk,
      claims,
      conformIdTokenClaims,
    });
    upstreams.push(u);
    const k = await startKeygate({
      port: kport,
      configYaml: (o) => keygateConfig(o, { upstreamIssuer: u.issuer, redirectUri, oidcExtra }),
    });
    started.push(k);
    return { u, k };
  }

  async function exchange(issuer, flow) {
    const code = flow.location.searchParams.get('code');
    assert.ok(code, `no code: ${flow.location.href}`);
    return tokenRequest(issuer, { grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: flow.verifier });
  }

  test('sign-in: app -> keygate -> upstream login + consent -> keygate /callback -> app; ID token carries the upstream claims', async (t) => {
    const codesBefore = up.counts.authorization_code;
    const flow = await signIn(kg.issuer, 'alice');
    t.diagnostic(`sign-in: ${flow.trace.length} browser hops in ${flow.ms.toFixed(0)} ms`);
    for (const line of flow.trace) t.diagnostic(`  ${line}`);
    const hops = flow.trace.map((line) => {
      const m = /^(\w+) (\S+) -> (\d+)(?: Location: (\S+))?$/.exec(line);
      return { method: m[1], url: new URL(m[2]), status: Number(m[3]), location: m[4] };
    });

    // /auth: the only sign-in method, straight on.
    assert.equal(hops[0].url.pathname, '/auth');
    assert.equal(hops[0].status, 302);
    assert.equal(new URL(hops[0].location, hops[0].url).pathname, '/auth/upstream');
    // /auth/upstream: off to the upstream's authorization endpoint.
    assert.equal(hops[1].url.pathname, '/auth/upstream');
    assert.equal(hops[1].status, 302);
    const upstreamAuth = new URL(hops[1].location);
    const upMeta = await (await fetch(`${up.issuer}/.well-known/openid-configuration`)).json();
    assert.equal(upstreamAuth.origin + upstreamAuth.pathname, upMeta.authorization_endpoint);
    const q = upstreamAuth.searchParams;
    assert.equal(q.get('client_id'), UPSTREAM_CLIENT.id);
    assert.equal(q.get('redirect_uri'), `${kg.issuer}callback`);
    assert.equal(q.get('response_type'), 'code');
    assert.deepEqual(q.get('scope').split(' ').sort(), [...UPSTREAM_SCOPES].sort());
    assert.equal(q.get('prompt'), 'consent');
    const keygateState = q.get('state');
    assert.ok(keygateState && keygateState !== flow.state, 'keygate sends its own request id as state, not the app state');
    // The upstream showed a login form and a consent form (both POSTed), then came back to /callback.
    const posts = hops.filter((h) => h.method === 'POST');
    assert.equal(posts.length, 2, 'login + consent at the upstream');
    assert.ok(posts.every((h) => h.url.origin === up.issuer));
    const back = hops.find((h) => h.url.origin + h.url.pathname === `${kg.issuer}callback`);
    assert.ok(back, 'the upstream redirects to keygate /callback');
    assert.equal(back.url.searchParams.get('state'), keygateState);
    assert.ok(back.url.searchParams.get('code'));
    assert.equal(back.status, 303);
    assert.equal(back, hops.at(-1), 'keygate /callback is the last hop before the app');
    assert.equal(flow.location.origin + flow.location.pathname, redirectUri);
    assert.equal(flow.location.searchParams.get('state'), flow.state);
    const code = flow.location.searchParams.get('code');
    assert.ok(code, `no code in ${flow.location.href}`);
    assert.equal(up.counts.authorization_code, codesBefore + 1, 'keygate exchanged the upstream code once');

    const res = await tokenRequest(kg.issuer, {
      grant_type: 'authorization_code',
      code,
      redirect_uri: redirectUri,
      code_verifier: flow.verifier,
    });
    assert.equal(res.status, 200, res.text);
    t.diagnostic(`code exchange at keygate: ${res.ms.toFixed(0)} ms`);
    assert.ok(res.json.refresh_token, 'a refresh token for offline_access');
    const claims = await verifyIdToken(res.json.id_token);
    assert.equal(claims.email, ALICE.email);
    assert.equal(claims.email_verified, true);
    assert.equal(claims.name, ALICE.name);
    assert.equal(claims.preferred_username, ALICE.preferred_username);
    assert.deepEqual(claims.groups, ['devs', 'ops']);
    assert.equal(claims.nonce, flow.nonce);
    assert.equal(claims.sub, dexSubject('alice', 'upstream'), 'Dex-compatible sub (upstream sub + connector id)');
    session = res.json;
  });

  test('refresh at keygate (reuseInterval 0s) refreshes upstream: a refresh_token grant there, group and name changes show', async (t) => {
    assert.ok(session, 'needs the sign-in above');
    const before = { ...up.counts, errors: up.counts.errors.length };
    const metricsBefore = await keygateMetrics(kg.issuer);

    up.accounts.get('alice').groups = ['ops'];
    const first = await tokenRequest(kg.issuer, { grant_type: 'refresh_token', refresh_token: session.refresh_token });
    assert.equal(first.status, 200, first.text);
    t.diagnostic(`refresh 1 at keygate (with the upstream refresh): ${first.ms.toFixed(0)} ms`);
    assert.equal(up.counts.refresh_token, before.refresh_token + 1, 'the upstream saw one refresh_token grant');
    assert.notEqual(first.json.refresh_token, session.refresh_token, 'keygate rotated (reuseInterval 0s)');
    let claims = await verifyIdToken(first.json.id_token);
    assert.deepEqual(claims.groups, ['ops']);
    assert.equal(claims.email, ALICE.email);
    assert.equal(claims.sub, dexSubject('alice', 'upstream'));

    // The upstream rotates its refresh tokens (rotateRefreshToken: true, the old one is consumed):
    // a second refresh only works if keygate kept the new upstream token.
    up.accounts.get('alice').name = 'Alice L.';
    up.accounts.get('alice').groups = ['ops', 'admins'];
    const second = await tokenRequest(kg.issuer, { grant_type: 'refresh_token', refresh_token: first.json.refresh_token });
    assert.equal(second.status, 200, second.text);
    t.diagnostic(`refresh 2 at keygate: ${second.ms.toFixed(0)} ms`);
    assert.equal(up.counts.refresh_token, before.refresh_token + 2);
    assert.equal(up.counts.errors.length, before.errors, `upstream grant errors: ${JSON.stringify(up.counts.errors)}`);
    claims = await verifyIdToken(second.json.id_token);
    assert.deepEqual(claims.groups, ['ops', 'admins']);
    assert.equal(claims.name, 'Alice L.');

    const metrics = await keygateMetrics(kg.issuer);
    assert.equal(metrics.keygate_upstream_refreshes_total - (metricsBefore.keygate_upstream_refreshes_total ?? 0), 2);
    // The rotated-away keygate token is refused (outside the 0 s window).
    const stale = await tokenRequest(kg.issuer, { grant_type: 'refresh_token', refresh_token: first.json.refresh_token });
    assert.equal(stale.status, 400, stale.text);
    assert.equal(stale.json.error, 'invalid_grant');
    session = second.json;
  });

  test('a user deleted upstream: the next refresh is invalid_grant and the session is gone', async () => {
    const flow = await signIn(kg.issuer, 'carol');
    const res = await tokenRequest(kg.issuer, {
      grant_type: 'authorization_code',
      code: flow.location.searchParams.get('code'),
      redirect_uri: redirectUri,
      code_verifier: flow.verifier,
    });
    assert.equal(res.status, 200, res.text);
    assert.equal((await verifyIdToken(res.json.id_token)).email, 'carol@example.com');
    const errorsBefore = up.counts.errors.length;
    up.accounts.delete('carol');
    const refused = await tokenRequest(kg.issuer, { grant_type: 'refresh_token', refresh_token: res.json.refresh_token });
    assert.equal(refused.status, 400, refused.text);
    assert.equal(refused.json.error, 'invalid_grant');
    assert.match(refused.json.error_description, /Upstream SSO refused the refresh/);
    assert.equal(up.counts.errors.length, errorsBefore + 1, 'the upstream refused the refresh_token grant');
    assert.equal(up.counts.errors.at(-1).grant_type, 'refresh_token');
    // The family was deleted: no second trip upstream.
    const again = await tokenRequest(kg.issuer, { grant_type: 'refresh_token', refresh_token: res.json.refresh_token });
    assert.equal(again.status, 400);
    assert.equal(again.json.error, 'invalid_grant');
    assert.equal(up.counts.errors.length, errorsBefore + 1);
  });

  test('email_verified false upstream (insecureSkipEmailVerified: false): a clear 403 page', async () => {
    const codes = up.counts.authorization_code;
    await assert.rejects(signIn(kg.issuer, 'bob'), (err) => {
      assert.ok(err instanceof LoginError, String(err));
      assert.equal(err.status, 403, `${err.message}\n${err.trace?.join('\n')}`);
      assert.match(new URL(err.url).pathname, /^\/callback$/);
      const text = pageText(err.body);
      assert.match(text, /Sign-in refused/);
      assert.match(text, /Upstream SSO refused the sign-in: the email address is not verified upstream/);
      return true;
    });
    assert.equal(up.counts.authorization_code, codes + 1, 'the code was exchanged; the refusal is keygate\'s');
  });

  test('nonce: keygate sends one upstream and refuses an ID token that carries another (OIDC Core 3.1.3.7)', async () => {
    // The upstream authorization request as keygate sends it carries a nonce; an attacker who
    // swaps it gets an ID token the callback refuses, though state and PKCE are intact.
    let sent;
    const tamper = (u) => {
      if (u.origin === new URL(up.issuer).origin && u.searchParams.has('client_id')) {
        sent = u.searchParams.get('nonce');
        u.searchParams.set('nonce', 'someone-elses-nonce');
      }
      return u;
    };
    const codes = up.counts.authorization_code;
    await assert.rejects(signIn(kg.issuer, 'alice', { rewrite: tamper }), (err) => {
      assert.ok(err instanceof LoginError, String(err));
      assert.equal(err.status, 403, `${err.message}\n${err.trace?.join('\n')}`);
      assert.match(pageText(err.body), /not issued for this sign-in \(nonce\)/);
      return true;
    });
    assert.ok(sent && sent.length >= 32, `keygate sent a nonce: ${sent}`);
    assert.equal(up.counts.authorization_code, codes + 1, 'the code was exchanged; the ID token was refused');
    // Untouched, the same flow signs in.
    const flow = await signIn(kg.issuer, 'alice');
    assert.equal((await exchange(kg.issuer, flow)).status, 200);
  });

  test('nonce: an upstream that drops it is refused by default; with sendNonce: false keygate sends none and checks none', async () => {
    // An upstream that ignores the nonce parameter, played by removing it on the way there.
    const drop = (u) => {
      if (u.origin === new URL(up.issuer).origin && u.searchParams.has('client_id')) u.searchParams.delete('nonce');
      return u;
    };
    await assert.rejects(signIn(kg.issuer, 'alice', { rewrite: drop }), (err) => {
      assert.ok(err instanceof LoginError, String(err));
      assert.equal(err.status, 403, `${err.message}\n${err.trace?.join('\n')}`);
      assert.match(pageText(err.body), /not issued for this sign-in \(nonce\)/);
      return true;
    });
    const { u, k } = await pair({ jwk: await signingJwk(), accounts: { alice: ALICE }, oidcExtra: 'sendNonce: false' });
    let sent = 'not seen';
    const watch = (url) => {
      if (url.origin === new URL(u.issuer).origin && url.searchParams.has('client_id')) sent = url.searchParams.get('nonce');
      return url;
    };
    const flow = await signIn(k.issuer, 'alice', { rewrite: watch });
    assert.equal(sent, null, 'no nonce sent upstream');
    const res = await exchange(k.issuer, flow);
    assert.equal(res.status, 200, res.text);
    const claims = await verifyIdToken(res.json.id_token, k.issuer);
    assert.equal(claims.email, ALICE.email);
    assert.equal(claims.nonce, flow.nonce, "the app's own nonce, in keygate's ID token, is untouched");
  });

  test('RFC 9207: an answer naming another issuer, or none from a provider that always names itself, is refused', async () => {
    const meta = await (await fetch(`${up.issuer}/.well-known/openid-configuration`)).json();
    assert.equal(meta.authorization_response_iss_parameter_supported, true, 'oidc-provider advertises RFC 9207');
    const atCallback = (change) => (u) => {
      if (u.origin + u.pathname === `${kg.issuer}callback`) {
        assert.equal(u.searchParams.get('iss'), meta.issuer, 'the upstream names itself');
        change(u.searchParams);
      }
      return u;
    };
    const codes = up.counts.authorization_code;
    for (const [what, change] of [
      ['another issuer', (q) => q.set('iss', 'https://evil.example.com')],
      ['no issuer', (q) => q.delete('iss')],
    ]) {
      await assert.rejects(signIn(kg.issuer, 'alice', { rewrite: atCallback(change) }), (err) => {
        assert.ok(err instanceof LoginError, `${what}: ${err}`);
        assert.equal(err.status, 403, `${what}: ${err.message}`);
        assert.match(pageText(err.body), /issuer/, what);
        return true;
      });
    }
    assert.equal(up.counts.authorization_code, codes, 'refused before the code was exchanged');
  });

  test('allowedGroups: [admins] on the DexProvider: the login is refused with a 403 page, not a 500', async () => {
    up.accounts.get('alice').groups = ['devs', 'ops'];
    kgAllowed = await startKeygate({
      port: ports.allowed,
      configYaml: (o) => keygateConfig(o, { upstreamIssuer: up.issuer, redirectUri, oidcExtra: 'allowedGroups: [admins]' }),
    });
    started.push(kgAllowed);
    await assert.rejects(signIn(kgAllowed.issuer, 'alice'), (err) => {
      assert.ok(err instanceof LoginError, String(err));
      assert.equal(err.status, 403, `${err.message}\n${err.trace?.join('\n')}`);
      assert.equal(new URL(err.url).origin + new URL(err.url).pathname, `${kgAllowed.issuer}callback`);
      const text = pageText(err.body);
      assert.match(text, /Sign-in refused/);
      assert.match(text, /Upstream SSO refused the sign-in: none of the user's groups is allowed \(allowedGroups\)/);
      return true;
    });
    // In the allowed group, the same keygate lets alice in.
    up.accounts.get('alice').groups = ['devs', 'admins'];
    const flow = await signIn(kgAllowed.issuer, 'alice');
    assert.ok(flow.location.searchParams.get('code'), flow.trace.join('\n'));
  });

  test('upstream down: a fresh keygate answers /auth/upstream with a 503 page "cannot be reached"; refresh and /callback fail softly', async (t) => {
    assert.ok(session, 'needs the refresh test above');
    const appAuth = (issuer, pathName) =>
      new URL(`${pathName}?${new URLSearchParams({
        client_id: APP_CLIENT.id,
        redirect_uri: redirectUri,
        response_type: 'code',
        scope: SCOPE,
        state: 'app-state',
      })}`, issuer);
    // A pending request at the main keygate (it has discovered the upstream already).
    const pending = await get(appAuth(kg.issuer, 'auth/upstream'));
    assert.equal(pending.status, 302);
    const keygateState = new URL(pending.location).searchParams.get('state');

    // Everything while the upstream is down is collected first and checked after the upstream is
    // back, so one wrong answer does not hide the others (nor the retry the next test checks).
    const seen = {};
    await up.stop();
    try {
      // A keygate that has not talked to the upstream yet: discovery fails.
      const fresh = await startKeygate({
        port: ports.fresh,
        configYaml: (o) => keygateConfig(o, { upstreamIssuer: up.issuer, redirectUri }),
      });
      started.push(fresh);
      seen.fresh = fresh;
      seen.auth = await get(appAuth(fresh.issuer, 'auth'));
      const t0 = performance.now();
      seen.down = await get(appAuth(fresh.issuer, 'auth/upstream'));
      t.diagnostic(`/auth/upstream with the upstream down: ${seen.down.status} in ${(performance.now() - t0).toFixed(0)} ms`);
      // The main keygate keeps its discovery for the process's life: it still sends the browser there.
      seen.cached = await get(appAuth(kg.issuer, 'auth/upstream'));
      // The browser comes back to the main keygate with a code keygate cannot redeem.
      // (With `iss`, as the upstream sends it: RFC 9207.)
      seen.callback = await get(new URL(`callback?${new URLSearchParams({ code: 'whatever', state: keygateState, iss: up.issuer })}`, kg.issuer));
      // A refresh needs the upstream.
      seen.refresh = await tokenRequest(kg.issuer, { grant_type: 'refresh_token', refresh_token: session.refresh_token });
      t.diagnostic(`refresh with the upstream down: ${seen.refresh.status} ${seen.refresh.text} (${seen.refresh.ms.toFixed(0)} ms)`);
    } finally {
      await up.start();
    }
    if (seen.fresh) seen.recovered = await get(appAuth(seen.fresh.issuer, 'auth/upstream'));
    session.retryAfterOutage = await tokenRequest(kg.issuer, { grant_type: 'refresh_token', refresh_token: session.refresh_token });
    t.diagnostic(`the same refresh once the upstream is back: ${session.retryAfterOutage.status} ${session.retryAfterOutage.text}`);

    const title = (page) => /<title>([^<]*)<\/title>/.exec(page.body)?.[1];
    assert.equal(seen.auth.status, 302);
    assert.equal(new URL(seen.auth.location, seen.fresh.issuer).pathname, '/auth/upstream');
    assert.equal(seen.down.status, 503, `upstream down at /auth/upstream: expected the 503 page of docs/configuration.md, got ${seen.down.status} "${title(seen.down)}": ${pageText(seen.down.body)}`);
    assert.match(seen.down.type, /^text\/html/);
    const text = pageText(seen.down.body);
    assert.match(text, /Temporarily unavailable/);
    assert.match(text, /Upstream SSO cannot be reached right now/);
    assert.doesNotMatch(text, /internal error/i);

    assert.equal(seen.cached.status, 302);
    assert.equal(new URL(seen.cached.location).origin, up.issuer);

    assert.equal(seen.callback.status, 503, `upstream down at /callback: got ${seen.callback.status} "${title(seen.callback)}": ${pageText(seen.callback.body)}`);
    assert.match(pageText(seen.callback.body), /Upstream SSO cannot be reached right now/);

    // JSON for the token endpoint: 503 temporarily_unavailable, not a 500.
    assert.equal(seen.refresh.status, 503, seen.refresh.text);
    assert.equal(seen.refresh.json.error, 'temporarily_unavailable');
    assert.match(seen.refresh.json.error_description, /Upstream SSO cannot be reached/);

    // The failed discovery was not cached: the fresh keygate works once the upstream is back.
    assert.equal(seen.recovered.status, 302, seen.recovered.body);
    assert.equal(new URL(seen.recovered.location).origin, up.issuer);
  });

  test('getUserInfo, userIDKey, userNameKey and claimMapping with an ES256 upstream that releases the claims only at userinfo', async () => {
    // oidc-provider's default (conformIdTokenClaims: true): the code flow's ID token has sub only.
    const dave = { email: 'dave@example.com', email_verified: true, name: 'Dave', nickname: 'dave-n', roles: ['qa', 'devs'] };
    const { u, k } = await pair({
      jwk: await signingJwk({ alg: 'ES256' }),
      claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name', 'nickname'], groups: ['roles'] },
      conformIdTokenClaims: true,
      accounts: { 'dave-1': dave },
      oidcExtra: 'getUserInfo: true\nuserIDKey: email\nuserNameKey: nickname\nclaimMapping: {groups: roles, preferred_username: nickname}',
    });
    const flow = await signIn(k.issuer, 'dave-1');
    const res = await exchange(k.issuer, flow);
    assert.equal(res.status, 200, res.text);
    let claims = await verifyIdToken(res.json.id_token, k.issuer);
    assert.equal(claims.email, dave.email);
    assert.equal(claims.name, 'dave-n', 'userNameKey: nickname');
    assert.equal(claims.preferred_username, 'dave-n', 'claimMapping.preferred_username: nickname');
    assert.deepEqual(claims.groups, ['qa', 'devs'], 'claimMapping.groups: roles');
    assert.equal(claims.sub, dexSubject(dave.email, 'upstream'), 'userIDKey: email');
    assert.equal(u.requests.filter((r) => r === 'GET /me').length, 1, `userinfo called once: ${u.requests.join(', ')}`);

    u.accounts.get('dave-1').roles = ['qa'];
    const refreshed = await tokenRequest(k.issuer, { grant_type: 'refresh_token', refresh_token: res.json.refresh_token });
    assert.equal(refreshed.status, 200, refreshed.text);
    assert.equal(u.counts.refresh_token, 1);
    claims = await verifyIdToken(refreshed.json.id_token, k.issuer);
    assert.deepEqual(claims.groups, ['qa']);
    assert.equal(u.requests.filter((r) => r === 'GET /me').length, 2);
  });

  // RFC 7517 §4.4: a JWK's "alg" is OPTIONAL. oidc-provider publishes an RSA key without one unless
  // configured (the key serves RS256 and PS256), and so do other providers (Microsoft Entra ID's
  // keys carry none); go-oidc (Dex) picks the key by kid and takes the algorithm from the JWS header.
  // Keygate verifies such a key by its type (kty/crv) and the JWS header's alg.
  test('an upstream whose JWKS key has no "alg" (optional in RFC 7517): the sign-in works', async () => {
    const { u, k } = await pair({ jwk: await signingJwk({ alg: 'RS256', withAlg: false }), accounts: { alice: ALICE } });
    const published = (await (await fetch(`${u.issuer}/jwks`)).json()).keys;
    assert.equal(published.length, 1);
    assert.equal(published[0].alg, undefined, 'oidc-provider publishes the RSA key without alg');
    let flow;
    try {
      flow = await signIn(k.issuer, 'alice');
    } catch (err) {
      if (!(err instanceof LoginError)) throw err;
      assert.fail(`${err.message}: ${pageText(err.body ?? '')}`);
    }
    const res = await exchange(k.issuer, flow);
    assert.equal(res.status, 200, res.text);
    assert.deepEqual((await verifyIdToken(res.json.id_token, k.issuer)).groups, ALICE.groups);
  });

  // docs/configuration.md: "a refresh answers temporarily_unavailable without ending the session".
  // The family rotates (compare-and-swap) before the upstream call; a 503 rolls that back.
  test('after an upstream outage the client can retry its refresh (docs: "without ending the session")', async () => {
    const retry = session?.retryAfterOutage;
    assert.ok(retry, 'needs the upstream-down test above');
    assert.equal(retry.status, 200, `retrying the refresh that failed with 503 -> ${retry.status} ${retry.text}`);
    assert.deepEqual((await verifyIdToken(retry.json.id_token)).groups, ['devs', 'admins']);
  });
});
