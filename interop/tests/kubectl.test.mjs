// Real kubectl with an `auth-provider: oidc` kubeconfig against an HTTPS test
// API server that verifies keygate's ID tokens on its own (JWKS signature,
// iss, aud contains kubernetes, email, groups). With an expired id-token,
// kubectl must refresh through keygate's /token, rewrite the kubeconfig and
// send the new ID token.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import * as jose from 'jose';
import {
  APP_CLIENT,
  JANE,
  cleanupDir,
  decodeJwtPayload,
  discover,
  freePort,
  hashPassword,
  keygateAvailable,
  loginAndExchange,
  makeTempDir,
  run,
  standardConfig,
  startKeygate,
} from '../lib/keygate.mjs';

/** The versioned kubectl (skips the dispatcher's GET /version), or KUBECTL. */
function findKubectl() {
  if (process.env.KUBECTL) return process.env.KUBECTL;
  let real;
  try {
    real = execFileSync('sh', ['-c', 'readlink -f "$(command -v kubectl)"'], { encoding: 'utf8' }).trim();
  } catch {
    return null;
  }
  if (!real) return null;
  const dir = path.dirname(real);
  const preferred = path.join(dir, 'kubectl.1.32');
  if (existsSync(preferred)) return preferred;
  const versioned = readdirSync(dir)
    .filter((f) => /^kubectl\.1\.\d+$/.test(f))
    .sort((a, b) => Number(a.split('.')[2]) - Number(b.split('.')[2]));
  if (versioned.length) return path.join(dir, versioned.at(-1));
  return real;
}

const KUBECTL = findKubectl();
const available = await keygateAvailable();
const skip = !available
  ? 'keygate binary missing (build it or set KEYGATE_BIN)'
  : !KUBECTL
    ? 'kubectl not found (set KUBECTL)'
    : false;

const SCOPE = 'openid email groups offline_access audience:server:client_id:kubernetes';

async function makeCerts(dir) {
  const o = (args) => run('openssl', args, { cwd: dir, timeoutMs: 30_000 });
  const steps = [
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'ca.key',
      '-out', 'ca.crt', '-subj', '/CN=keygate-interop-ca', '-days', '2'],
    ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'server.key',
      '-out', 'server.csr', '-subj', '/CN=127.0.0.1'],
    ['x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.crt',
      '-days', '2', '-extfile', 'ext.cnf'],
  ];
  writeFileSync(
    path.join(dir, 'ext.cnf'),
    'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n',
  );
  for (const args of steps) {
    const r = await o(args);
    if (r.code !== 0) throw new Error(`openssl ${args.join(' ')} failed: ${r.stderr}`);
  }
  return {
    ca: path.join(dir, 'ca.crt'),
    key: readFileSync(path.join(dir, 'server.key')),
    cert: readFileSync(path.join(dir, 'server.crt')),
  };
}

/**
 * A minimal Kubernetes API server that authenticates like kube-apiserver's
 * OIDC authenticator: JWS signature from the issuer's JWKS, iss, aud contains
 * "kubernetes", and requires email + groups claims.
 */
async function startApiServer({ issuer, certs }) {
  const meta = await discover(issuer);
  const jwks = jose.createRemoteJWKSet(new URL(meta.jwks_uri));
  const seen = [];
  const json = (res, status, body) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  const server = https.createServer({ key: certs.key, cert: certs.cert }, async (req, res) => {
    const entry = { method: req.method, path: req.url, at: Date.now() };
    seen.push(entry);
    const authz = req.headers.authorization ?? '';
    const m = /^Bearer\s+(\S+)$/i.exec(authz);
    if (!m) {
      entry.auth = 'none';
      return json(res, 401, { kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: 'Unauthorized', code: 401, message: 'no bearer token' });
    }
    entry.token = m[1];
    try {
      const { payload, protectedHeader } = await jose.jwtVerify(m[1], jwks, {
        issuer,
        audience: 'kubernetes',
        algorithms: ['RS256', 'ES256'],
      });
      if (typeof payload.email !== 'string' || !payload.email) throw new Error('no email claim');
      if (!Array.isArray(payload.groups)) throw new Error('no groups claim');
      entry.auth = 'valid';
      entry.claims = payload;
      entry.alg = protectedHeader.alg;
    } catch (err) {
      entry.auth = 'invalid';
      entry.error = `${err.code ?? err.name}: ${err.message}`;
      return json(res, 401, { kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: 'Unauthorized', code: 401, message: entry.error });
    }
    const url = new URL(req.url, 'https://127.0.0.1');
    switch (url.pathname) {
      case '/version':
        return json(res, 200, { major: '1', minor: '32', gitVersion: 'v1.32.0-keygate-interop', platform: 'linux/amd64' });
      case '/api':
        return json(res, 200, { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: '127.0.0.1' }] });
      case '/apis':
        return json(res, 200, { kind: 'APIGroupList', apiVersion: 'v1', groups: [] });
      case '/api/v1':
        return json(res, 200, {
          kind: 'APIResourceList',
          groupVersion: 'v1',
          resources: [{ name: 'namespaces', singularName: 'namespace', namespaced: false, kind: 'Namespace', verbs: ['get', 'list'], shortNames: ['ns'] }],
        });
      case '/api/v1/namespaces':
        return json(res, 200, {
          kind: 'NamespaceList',
          apiVersion: 'v1',
          metadata: { resourceVersion: '1' },
          items: ['default', 'kube-system'].map((name) => ({
            metadata: { name, uid: `00000000-0000-0000-0000-${name === 'default' ? '000000000001' : '000000000002'}`, resourceVersion: '1', creationTimestamp: '2024-01-01T00:00:00Z' },
            spec: { finalizers: ['kubernetes'] },
            status: { phase: 'Active' },
          })),
        });
      default:
        return json(res, 404, { kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: 'NotFound', code: 404, message: `${url.pathname} not found` });
    }
  });
  const port = await freePort();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  return {
    url: `https://127.0.0.1:${port}`,
    seen,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}

/** An unsigned-looking JWT whose exp is an hour in the past (kubectl never checks the signature). */
function expiredIdToken(issuer) {
  const now = Math.floor(Date.now() / 1000);
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return [
    enc({ alg: 'RS256', typ: 'JWT', kid: 'stale' }),
    enc({ iss: issuer, sub: 'stale', aud: ['kubernetes', APP_CLIENT.id], email: JANE.email, groups: JANE.groups, iat: now - 7200, exp: now - 3600 }),
    Buffer.from('not-a-signature').toString('base64url'),
  ].join('.');
}

function kubeconfigYaml({ server, ca, issuer, idToken, refreshToken }) {
  const q = JSON.stringify; // JSON strings are valid YAML scalars
  return `apiVersion: v1
kind: Config
clusters:
- name: interop
  cluster:
    server: ${q(server)}
    certificate-authority: ${q(ca)}
users:
- name: jane
  user:
    auth-provider:
      name: oidc
      config:
        idp-issuer-url: ${q(issuer)}
        client-id: ${q(APP_CLIENT.id)}
        client-secret: ${q(APP_CLIENT.secret)}
        id-token: ${q(idToken)}
        refresh-token: ${q(refreshToken)}
contexts:
- name: interop
  context: {cluster: interop, user: jane}
current-context: interop
preferences: {}
`;
}

describe('kubectl oidc auth-provider against keygate', { skip }, () => {
  let kg;
  let api;
  let dir;
  let redirectUri;
  let lastKubectl = null;

  before(async () => {
    dir = await makeTempDir('keygate-kubectl-');
    const rport = await freePort();
    redirectUri = `http://127.0.0.1:${rport}/callback`;
    const passwordHash = await hashPassword(JANE.password);
    kg = await startKeygate({
      configYaml: (o) => standardConfig({ ...o, passwordHash, redirectURIs: [redirectUri] }),
    });
    const certs = await makeCerts(dir);
    api = await startApiServer({ issuer: kg.issuer, certs });
    api.ca = certs.ca;
  });

  after(async () => {
    await api?.close();
    await kg?.stop();
    await cleanupDir(kg?.dir);
    await cleanupDir(dir);
  });

  afterEach((t) => {
    if (t.passed === false) {
      if (lastKubectl) {
        process.stderr.write(
          `\n----- last kubectl run: ${lastKubectl.args.join(' ')} (exit ${lastKubectl.code}) -----\n` +
            `stdout:\n${lastKubectl.stdout}\nstderr:\n${lastKubectl.stderr}\n` +
            `API server saw: ${JSON.stringify(api?.seen.map(({ token, ...r }) => r), null, 1)}\n`,
        );
      }
      kg?.dumpLog(`after failed test "${t.name}"`);
    }
  });

  async function kubectl(kubeconfig, ...args) {
    const full = ['--kubeconfig', kubeconfig, '--cache-dir', path.join(dir, 'kube-cache'), '--request-timeout', '20s', '-v', '6', ...args];
    const env = { PATH: process.env.PATH, HOME: dir, LANG: 'C' };
    const r = await run(KUBECTL, full, { env, timeoutMs: 60_000 });
    lastKubectl = { args: [KUBECTL, ...full], ...r };
    return r;
  }

  async function readKubeconfigUser(kubeconfig) {
    const r = await run(KUBECTL, ['config', 'view', '--raw', '-o', 'json', '--kubeconfig', kubeconfig], {
      env: { PATH: process.env.PATH, HOME: dir },
    });
    assert.equal(r.code, 0, `kubectl config view: ${r.stderr}`);
    const cfg = JSON.parse(r.stdout);
    return cfg.users.find((u) => u.name === 'jane').user['auth-provider'].config;
  }

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
