// Real kubectl with an `auth-provider: oidc` kubeconfig against an HTTPS test
// API server that verifies keygate's ID tokens on its own (JWKS signature,
// iss, aud contains kubernetes, email, groups). With an expired id-token,
// kubectl must refresh through keygate's /token, rewrite the kubeconfig and
// send the new ID token.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import {
  APP_CLIENT,
  JANE,
  cleanupDir,
  decodeJwtPayload,
  freePort,
  hashPassword,
  keygateAvailable,
  loginAndExchange,
  makeTempDir,
  standardConfig,
  startKeygate,
} from '../lib/keygate.mjs';
import { expiredIdToken, findKubectl, kubeconfigYaml, kubectlRunner, makeCerts, startApiServer } from '../lib/kube.mjs';

const KUBECTL = findKubectl();
const available = await keygateAvailable();
const skip = !available
  ? 'keygate binary missing (build it or set KEYGATE_BIN)'
  : !KUBECTL
    ? 'kubectl not found (set KUBECTL)'
    : false;

const SCOPE = 'openid email groups offline_access audience:server:client_id:kubernetes';

describe('kubectl oidc auth-provider against keygate', { skip }, () => {
  let kg;
  let api;
  let dir;
  let redirectUri;
  let kc; // kubectl runner (HOME and cache in `dir`)

  before(async () => {
    dir = await makeTempDir('keygate-kubectl-');
    const rport = await freePort();
    redirectUri = `http://127.0.0.1:${rport}/callback`;
    const passwordHash = await hashPassword(JANE.password);
    kg = await startKeygate({
      configYaml: (o) => standardConfig({ ...o, passwordHash, redirectURIs: [redirectUri] }),
    });
    api = await startApiServer({ issuer: kg.issuer, certs: await makeCerts(dir) });
    kc = kubectlRunner({ kubectlBin: KUBECTL, dir });
  });

  after(async () => {
    await api?.close();
    await kg?.stop();
    await cleanupDir(kg?.dir);
    await cleanupDir(dir);
  });

  afterEach((t) => {
    if (t.passed === false) {
      if (kc?.last) process.stderr.write(`\n${kc.describeLast(api)}`);
      kg?.dumpLog(`after failed test "${t.name}"`);
    }
  });

  const kubectl = (...args) => kc.kubectl(...args);
  const readKubeconfigUser = (kubeconfig) => kc.readUser(kubeconfig);

  test('expired id-token: kubectl refreshes via /token, rewrites kubeconfig, API server accepts the new token', async () => {
    const tokens = await loginAndExchange(kg.issuer, { scope: SCOPE, redirectUri });
    assert.ok(tokens.refresh_token, 'login with offline_access gives a refresh token');
    const initialRefresh = tokens.refresh_token;
    const staleIdToken = expiredIdToken(kg.issuer);
    const kubeconfig = path.join(dir, 'kubeconfig');
    writeFileSync(
      kubeconfig,
      kubeconfigYaml({ server: api.url, ca: api.ca, issuer: kg.issuer, idToken: staleIdToken, refreshToken: initialRefresh }),
      { mode: 0o600 },
    );

    // --- run 1: must refresh
    const before1 = api.seen.length;
    const r1 = await kubectl(kubeconfig, 'get', '--raw', '/api/v1/namespaces');
    assert.equal(r1.code, 0, `kubectl exit code (stderr: ${r1.stderr.slice(-3000)})`);
    const list = JSON.parse(r1.stdout);
    assert.equal(list.kind, 'NamespaceList');
    assert.deepEqual(list.items.map((i) => i.metadata.name), ['default', 'kube-system']);

    // kubectl -v6 logs its own HTTP calls: it must have refreshed through the issuer's token endpoint.
    assert.match(r1.stderr, /POST \S+\/token 200\b/, 'kubectl POSTed to /token and got 200');
    const run1 = api.seen.slice(before1);
    assert.ok(run1.length > 0, 'API server was called');
    assert.ok(run1.every((e) => e.auth === 'valid'), `every request authenticated: ${JSON.stringify(run1.map((e) => [e.path, e.auth, e.error]))}`);
    const c = run1.at(-1).claims;
    assert.equal(c.iss, kg.issuer);
    assert.equal(c.email, JANE.email);
    assert.ok(c.groups.includes('devs'), `groups ${JSON.stringify(c.groups)}`);
    const aud = [].concat(c.aud);
    assert.ok(aud.includes('kubernetes'), `aud ${JSON.stringify(c.aud)}`);
    assert.ok(aud.includes(APP_CLIENT.id), `aud ${JSON.stringify(c.aud)} also names the requesting client`);
    assert.equal(c.azp, APP_CLIENT.id, 'azp is the requesting client');
    assert.ok(c.exp > Date.now() / 1000 + 60, 'fresh token');

    const cfg1 = await readKubeconfigUser(kubeconfig);
    assert.notEqual(cfg1['id-token'], staleIdToken, 'kubeconfig id-token rewritten');
    assert.equal(cfg1['id-token'], run1.at(-1).token, 'the API server got the id-token now stored in the kubeconfig');
    assert.ok(cfg1['refresh-token'], 'kubeconfig still has a refresh-token');
    assert.notEqual(cfg1['refresh-token'], initialRefresh, 'kubeconfig refresh-token rotated');
    assert.ok(decodeJwtPayload(cfg1['id-token']).exp > Date.now() / 1000);

    // --- run 2: token still valid, must not refresh
    const before2 = api.seen.length;
    const r2 = await kubectl(kubeconfig, 'get', '--raw', '/api/v1/namespaces');
    assert.equal(r2.code, 0, `second kubectl run (stderr: ${r2.stderr.slice(-3000)})`);
    assert.equal(JSON.parse(r2.stdout).kind, 'NamespaceList');
    const run2 = api.seen.slice(before2);
    assert.ok(run2.length > 0 && run2.every((e) => e.auth === 'valid'));
    assert.equal(run2.at(-1).token, cfg1['id-token'], 'second run sends the stored token unchanged');
    assert.doesNotMatch(r2.stderr, /POST \S+\/token\b/, 'no call to /token on the second run');
    const cfg2 = await readKubeconfigUser(kubeconfig);
    assert.equal(cfg2['id-token'], cfg1['id-token'], 'no refresh on the second run (id-token unchanged)');
    assert.equal(cfg2['refresh-token'], cfg1['refresh-token'], 'no refresh on the second run (refresh-token unchanged)');
  });

  test('expired id-token with an unknown refresh token: kubectl fails and sends nothing', async () => {
    const staleIdToken = expiredIdToken(kg.issuer);
    const kubeconfig = path.join(dir, 'kubeconfig-bad');
    writeFileSync(
      kubeconfig,
      kubeconfigYaml({ server: api.url, ca: api.ca, issuer: kg.issuer, idToken: staleIdToken, refreshToken: 'bogus-refresh-token' }),
      { mode: 0o600 },
    );
    const before = api.seen.length;
    const r = await kubectl(kubeconfig, 'get', '--raw', '/api/v1/namespaces');
    assert.notEqual(r.code, 0, 'kubectl must fail');
    assert.ok(api.seen.slice(before).every((e) => e.auth !== 'valid'), 'no authenticated request reached the API server');
    const cfg = await readKubeconfigUser(kubeconfig);
    assert.equal(cfg['id-token'], staleIdToken, 'kubeconfig not rewritten');
  });
});
