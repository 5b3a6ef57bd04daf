// kubectl (auth-provider oidc) and openid-client refreshing the SAME refresh
// token family at the same time, against the real keygate binary.
//
// Keygate's refresh semantics (Dex "obsolete tokens", DESIGN.md §3): a family
// keeps the current secret, the previous one and `last_used`. Outside the reuse
// window the current secret rotates the family with ONE compare-and-swap, so of
// N concurrent callers one rotates (and refreshes the user upstream) and the
// others find their secret obsolete but inside the window: everybody gets the
// same new refresh token and a fresh ID token. Inside the window the current
// secret is answered with that same token again; outside it the obsolete one
// is invalid_grant.
//
// To make "at the same time" real, both clients talk to keygate's token
// endpoint through lib/token-gate.mjs, which holds their requests until all
// of them are in and forwards them in the same instant.
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import * as client from 'openid-client';
import * as jose from 'jose';
import YAML from 'yaml';
import {
  APP_CLIENT,
  JANE,
  cleanupDir,
  freePort,
  hashPassword,
  keygateAvailable,
  loginAndExchange,
  makeTempDir,
  standardConfig,
  startKeygate,
} from '../lib/keygate.mjs';
import { expiredIdToken, findKubectl, kubeconfigYaml, kubectlRunner, makeCerts, startApiServer } from '../lib/kube.mjs';
import { explained, oauthErrorCode } from '../lib/openid.mjs';
import { startTokenGate } from '../lib/token-gate.mjs';

const KUBECTL = findKubectl();
const available = await keygateAvailable();
const skip = !available
  ? 'keygate binary missing (build it or set KEYGATE_BIN)'
  : !KUBECTL
    ? 'kubectl not found (set KUBECTL)'
    : false;

const SCOPE = 'openid email groups offline_access audience:server:client_id:kubernetes';
// The window is a real one: the binary runs on the system clock, which a test cannot move (the
// Rust end-to-end tests move an injected clock instead), so the test uses a short window and
// waits it out. Keygate counts in whole unix seconds: a window of 2 s is open for [1 s, 2 s] of
// real time after the moment it starts, which is plenty for one kubectl run.
const REUSE_SECONDS = 2;
const OPENID_CALLS = 8; // parallel openid-client refreshTokenGrant calls per burst
const sleep = (ms) => new Promise((r) => setTimeout(r, Math.max(0, ms)));

describe('kubectl and openid-client refreshing one token family concurrently', { skip }, () => {
  let kg;
  let api;
  let gate;
  let dir;
  let redirectUri;
  let kc; // kubectl runner
  let oc; // openid-client Configuration whose token endpoint is the gate
  let jwks;
  let kubeconfig;
  // Carried from one step to the next.
  const state = {};

  before(async () => {
    dir = await makeTempDir('keygate-concurrent-');
    const rport = await freePort();
    redirectUri = `http://127.0.0.1:${rport}/callback`;
    const passwordHash = await hashPassword(JANE.password);
    kg = await startKeygate({
      configYaml: (o) =>
        standardConfig({ ...o, passwordHash, redirectURIs: [redirectUri], reuseInterval: `${REUSE_SECONDS}s` }),
    });
    api = await startApiServer({ issuer: kg.issuer, certs: await makeCerts(dir) });
    gate = await startTokenGate({ issuer: kg.issuer });
    kc = kubectlRunner({ kubectlBin: KUBECTL, dir });

    const discovered = await explained(
      client.discovery(
        new URL(kg.issuer),
        APP_CLIENT.id,
        { client_secret: APP_CLIENT.secret },
        client.ClientSecretBasic(APP_CLIENT.secret),
        { execute: [client.allowInsecureRequests] },
      ),
    );
    const meta = discovered.serverMetadata();
    oc = new client.Configuration(
      { ...meta, token_endpoint: gate.tokenEndpoint },
      APP_CLIENT.id,
      { client_secret: APP_CLIENT.secret },
      client.ClientSecretBasic(APP_CLIENT.secret),
    );
    client.allowInsecureRequests(oc);
    client.enableNonRepudiationChecks(oc); // openid-client checks the ID token's JWS signature too
    jwks = jose.createRemoteJWKSet(new URL(meta.jwks_uri));
  });

  after(async () => {
    await gate?.close();
    await api?.close();
    await kg?.stop();
    await cleanupDir(kg?.dir);
    await cleanupDir(dir);
  });

  afterEach((t) => {
    if (t.passed === false) {
      if (kc?.last) process.stderr.write(`\n${kc.describeLast(api)}`);
      if (gate) process.stderr.write(`\n----- token requests through the gate -----\n${gate.trace()}\n`);
      kg?.dumpLog(`after failed test "${t.name}"`);
    }
  });

  /** keygate's Prometheus counters: {name: value}. */
  async function metrics() {
    const res = await fetch(new URL('metrics', kg.issuer));
    const text = await res.text();
    assert.equal(res.status, 200, `GET ${kg.issuer}metrics -> ${res.status}: ${text}`);
    const out = {};
    for (const m of text.matchAll(/^(keygate_\w+) (\d+)$/gm)) out[m[1]] = Number(m[2]);
    for (const k of ['keygate_upstream_refreshes_total', 'keygate_refresh_rotations_total', 'keygate_refresh_reused_total']) {
      assert.ok(k in out, `/metrics exposes ${k}:\n${text}`);
    }
    return out;
  }
  const delta = (a, b) => Object.fromEntries(Object.keys(b).map((k) => [k, b[k] - (a[k] ?? 0)]));

  /** Verify an ID token on our own, as kube-apiserver would: JWKS signature, iss, aud ∋ kubernetes. */
  async function verifyIdToken(idToken) {
    const { payload } = await jose.jwtVerify(idToken, jwks, { issuer: kg.issuer, audience: 'kubernetes' });
    assert.ok([].concat(payload.aud).includes(APP_CLIENT.id), `aud ${JSON.stringify(payload.aud)} names the client`);
    assert.equal(payload.azp, APP_CLIENT.id);
    assert.equal(payload.email, JANE.email);
    assert.ok(payload.groups?.includes('devs'), `groups ${JSON.stringify(payload.groups)}`);
    assert.ok(payload.exp > Date.now() / 1000 + 60, 'fresh ID token');
    return payload;
  }

  /** Put an expired id-token back into kubectl's own (rewritten) kubeconfig so its next run refreshes. */
  function expireKubeconfigIdToken() {
    const doc = YAML.parseDocument(readFileSync(kubeconfig, 'utf8'));
    const users = doc.get('users');
    const idx = users.items.findIndex((u) => u.get('name') === 'jane');
    assert.ok(idx >= 0, 'kubeconfig still has user jane');
    doc.setIn(['users', idx, 'user', 'auth-provider', 'config', 'id-token'], expiredIdToken(kg.issuer));
    writeFileSync(kubeconfig, doc.toString(), { mode: 0o600 });
  }

  /**
   * One burst: kubectl (expired id-token) and OPENID_CALLS openid-client refreshes with
   * `refreshToken`, their token requests held at the gate and released together.
   */
  async function burst(refreshToken, { alignToSecond = false } = {}) {
    const batch = gate.hold({ count: 1 + OPENID_CALLS, alignToSecond, timeoutMs: 30_000 });
    const apiBefore = api.seen.length;
    const startedAt = Date.now();
    const [k, ...oidc] = await Promise.all([
      kc.kubectl(kubeconfig, 'get', '--raw', '/api/v1/namespaces'),
      ...Array.from({ length: OPENID_CALLS }, () =>
        explained(client.refreshTokenGrant(oc, refreshToken)).then(
          (value) => ({ ok: true, value }),
          (error) => ({ ok: false, error }),
        ),
      ),
    ]);
    const endedAt = Date.now();
    await batch.released;
    return { batch, kubectl: k, oidc, apiSeen: api.seen.slice(apiBefore), startedAt, endedAt };
  }

  /** What every burst must show: all held together, all succeeded, one refresh token for all. */
  async function checkBurst(b, { presented }) {
    const { batch } = b;
    assert.equal(batch.timedOut, false, `all ${batch.count} token requests reached the gate:\n${gate.trace(batch.entries)}`);
    assert.equal(batch.entries.length, 1 + OPENID_CALLS);
    assert.deepEqual(
      batch.entries.map((e) => e.client).sort(),
      ['kubectl', ...Array(OPENID_CALLS).fill('openid-client')].sort(),
      'the held batch is kubectl + the openid-client calls',
    );
    for (const e of batch.entries) {
      assert.equal(e.grantType, 'refresh_token');
      assert.equal(e.presented, presented, `#${e.n} (${e.client}) presented the expected refresh token`);
    }
    assert.ok(
      batch.entries.every((e) => e.status === 200),
      `every held token request got 200:\n${gate.trace(batch.entries)}`,
    );

    // kubectl: refreshed, and the API server accepted what it sent.
    const k = b.kubectl;
    assert.equal(k.code, 0, `kubectl exit code (stderr: ${k.stderr.slice(-3000)})`);
    assert.equal(JSON.parse(k.stdout).kind, 'NamespaceList');
    assert.match(k.stderr, /POST \S+\/token 200\b/, 'kubectl POSTed to the token endpoint and got 200');
    assert.ok(b.apiSeen.length > 0, 'API server was called');
    assert.ok(
      b.apiSeen.every((e) => e.auth === 'valid'),
      `every API request authenticated: ${JSON.stringify(b.apiSeen.map((e) => [e.path, e.auth, e.error]))}`,
    );
    const kcfg = await kc.readUser(kubeconfig);
    assert.equal(kcfg['id-token'], b.apiSeen.at(-1).token, 'the API server got the id-token kubectl stored');
    await verifyIdToken(kcfg['id-token']);

    // openid-client: every call succeeded with a valid, signature-checked ID token.
    const failed = b.oidc.filter((r) => !r.ok);
    assert.equal(failed.length, 0, `openid-client failures: ${failed.map((r) => r.error.message).join('\n')}`);
    for (const { value } of b.oidc) {
      assert.ok(value.id_token, 'refresh returns an id_token');
      assert.ok(value.refresh_token, 'refresh returns a refresh_token');
      await verifyIdToken(value.id_token);
    }

    // One refresh token for everybody, kubectl's kubeconfig included.
    const handedOut = new Set([...b.oidc.map((r) => r.value.refresh_token), kcfg['refresh-token']]);
    assert.equal(handedOut.size, 1, `one refresh token for all callers, got ${handedOut.size}`);
    const [token] = handedOut;
    for (const e of batch.entries) assert.equal(e.json.refresh_token, token, `#${e.n} (${e.client}) got it on the wire`);
    return { token, kcfg };
  }

  const timing = (b) => {
    const { batch } = b;
    const arrived = batch.entries.map((e) => e.arrivedAt);
    const forwarded = batch.entries.map((e) => e.forwardedAt);
    const responded = batch.entries.map((e) => e.respondedAt);
    const kube = batch.entries.find((e) => e.client === 'kubectl');
    return {
      arrivalSpreadMs: Math.max(...arrived) - Math.min(...arrived),
      kubectlArrivedAfterMs: kube.arrivedAt - b.startedAt,
      heldForAlignmentMs: batch.releasedAt - Math.max(...arrived),
      forwardSpreadMs: Math.max(...forwarded) - Math.min(...forwarded),
      keygateAnsweredAllWithinMs: Math.max(...responded) - batch.releasedAt,
      burstTotalMs: b.endedAt - b.startedAt,
      kubectlRunMs: b.kubectl.endedAt - b.kubectl.startedAt,
    };
  };

  test('one burst after the window: one rotation, every caller gets the same new refresh token', async (t) => {
    const tokens = await loginAndExchange(kg.issuer, { scope: SCOPE, redirectUri });
    const loggedInAt = Date.now();
    assert.ok(tokens.refresh_token, 'login with offline_access gives a refresh token');
    state.R0 = tokens.refresh_token;
    kubeconfig = path.join(dir, 'kubeconfig');
    writeFileSync(
      kubeconfig,
      kubeconfigYaml({ server: api.url, ca: api.ca, issuer: gate.issuer, idToken: expiredIdToken(kg.issuer), refreshToken: state.R0 }),
      { mode: 0o600 },
    );
    const m0 = await metrics();

    // Just over the window since the sign-in (R0's last_used): R0 is current and outside it, so
    // the burst must rotate. The gate then releases at the start of a second (see token-gate.mjs).
    await sleep(loggedInAt + REUSE_SECONDS * 1000 + 200 - Date.now());
    const b = await burst(state.R0, { alignToSecond: true });
    const { token: R1 } = await checkBurst(b, { presented: state.R0 });
    assert.notEqual(R1, state.R0, 'the family rotated');
    assert.equal(R1.split('.')[0], state.R0.split('.')[0], 'same family id, new secret');

    const m1 = await metrics();
    const d = delta(m0, m1);
    const calls = gate.requests.filter((e) => e.arrivedAt >= b.startedAt).length;
    assert.equal(d.keygate_upstream_refreshes_total, 1, `exactly one upstream refresh: ${JSON.stringify(d)}`);
    assert.equal(d.keygate_refresh_rotations_total, 1, `exactly one rotation: ${JSON.stringify(d)}`);
    assert.equal(d.keygate_refresh_reused_total, calls - 1, `the other ${calls - 1} refreshes reused it: ${JSON.stringify(d)}`);

    // The window of R1 starts at the rotation, which happened after the release and before the
    // first answer; keygate counts whole seconds.
    const firstAnswer = Math.min(...b.batch.entries.map((e) => e.respondedAt));
    state.R1 = R1;
    state.windowSurelyOpenUntil = (Math.floor(b.batch.releasedAt / 1000) + REUSE_SECONDS) * 1000;
    state.windowSurelyClosedAt = (Math.floor(firstAnswer / 1000) + REUSE_SECONDS) * 1000;
    state.m1 = m1;
    state.timing1 = timing(b);
    t.diagnostic(`burst 1 timing: ${JSON.stringify(state.timing1)}`);
  });

  test('both keep working: kubectl (expired id-token again) and openid-client with R1, concurrently, inside the window', async (t) => {
    assert.ok(state.R1, 'needs the previous step');
    expireKubeconfigIdToken();
    const before = await kc.readUser(kubeconfig);
    assert.equal(before['refresh-token'], state.R1, 'kubectl kept R1 in its kubeconfig');

    const b = await burst(state.R1);
    const lastAnswer = Math.max(...b.batch.entries.map((e) => e.respondedAt ?? Infinity));
    assert.ok(
      lastAnswer < state.windowSurelyOpenUntil,
      `test timing, not keygate: the second burst must finish inside R1's reuse window ` +
        `(answered at ${new Date(lastAnswer).toISOString()}, window surely open until ${new Date(state.windowSurelyOpenUntil).toISOString()})`,
    );
    const { token, kcfg } = await checkBurst(b, { presented: state.R1 });
    assert.equal(token, state.R1, 'inside the window: the SAME refresh token R1, no rotation');
    assert.notEqual(kcfg['id-token'], before['id-token'], 'kubectl replaced the expired id-token');

    const m2 = await metrics();
    const d = delta(state.m1, m2);
    const calls = gate.requests.filter((e) => e.arrivedAt >= b.startedAt).length;
    assert.equal(d.keygate_upstream_refreshes_total, 0, `no upstream refresh inside the window: ${JSON.stringify(d)}`);
    assert.equal(d.keygate_refresh_rotations_total, 0, `no rotation inside the window: ${JSON.stringify(d)}`);
    assert.equal(d.keygate_refresh_reused_total, calls, `all ${calls} refreshes reused R1: ${JSON.stringify(d)}`);
    state.m2 = m2;
    state.timing2 = timing(b);
    t.diagnostic(`burst 2 timing: ${JSON.stringify(state.timing2)}`);
  });

  test('after the window R0 is refused with invalid_grant (and R1 still works)', async () => {
    assert.ok(state.R1 && state.windowSurelyClosedAt, 'needs the previous steps');
    await sleep(state.windowSurelyClosedAt + 100 - Date.now());
    const m = await metrics();

    // Expected error: R0 is the obsolete secret and the window is over.
    await assert.rejects(client.refreshTokenGrant(oc, state.R0), (err) => {
      const detail = `${err.name}: ${err.message} status=${err.status} cause=${JSON.stringify(err.cause ?? null)}`;
      assert.equal(err.status, 400, detail);
      assert.equal(oauthErrorCode(err), 'invalid_grant', detail);
      return true;
    });
    const refused = gate.requests.at(-1);
    assert.equal(refused.presented, state.R0);
    assert.equal(refused.status, 400, gate.trace([refused]));

    // revokeOnReuse is off (the default), so the family lives on: R1, current and outside the
    // window, rotates it once more.
    const next = await explained(client.refreshTokenGrant(oc, state.R1));
    await verifyIdToken(next.id_token);
    assert.ok(next.refresh_token && next.refresh_token !== state.R1 && next.refresh_token !== state.R0, 'R1 rotated to a new token');
    const d = delta(m, await metrics());
    assert.equal(d.keygate_refresh_rotations_total, 1, JSON.stringify(d));
    assert.equal(d.keygate_refresh_reused_total, 0, JSON.stringify(d));
  });
});
