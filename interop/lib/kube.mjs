// kubectl side of the interoperability tests: find the real kubectl, make a
// throw-away CA and server certificate, run a minimal HTTPS Kubernetes API
// server that verifies keygate's ID tokens on its own, and write/read
// `auth-provider: oidc` kubeconfigs.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import * as jose from 'jose';
import { APP_CLIENT, JANE, discover, freePort, run } from './keygate.mjs';

/** The versioned kubectl (skips the dispatcher's GET /version), or KUBECTL. */
export function findKubectl() {
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

/** A CA and a server certificate for 127.0.0.1 in `dir`: {ca (path), key, cert (PEM buffers)}. */
export async function makeCerts(dir) {
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
 *
 * Returns {url, ca, seen, close()}; `seen` lists every request with
 * {method, path, at, auth: 'none'|'valid'|'invalid', token, claims, alg, error}.
 * `port`: listen there (e.g. one named in keygate's config before keygate started) instead of a
 * fresh free port.
 */
export async function startApiServer({ issuer, certs, port }) {
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
  port ??= await freePort();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  return {
    url: `https://127.0.0.1:${port}`,
    ca: certs.ca,
    seen,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}

/** An unsigned-looking JWT whose exp is an hour in the past (kubectl never checks the signature). */
export function expiredIdToken(issuer) {
  const now = Math.floor(Date.now() / 1000);
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return [
    enc({ alg: 'RS256', typ: 'JWT', kid: 'stale' }),
    enc({ iss: issuer, sub: 'stale', aud: ['kubernetes', APP_CLIENT.id], email: JANE.email, groups: JANE.groups, iat: now - 7200, exp: now - 3600 }),
    Buffer.from('not-a-signature').toString('base64url'),
  ].join('.');
}

/** A kubeconfig with one cluster, user `jane` (auth-provider oidc) and context. */
export function kubeconfigYaml({ server, ca, issuer, idToken, refreshToken }) {
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

/**
 * A kubectl runner bound to a scratch dir (HOME and --cache-dir live there).
 * `kubectl(kubeconfig, ...args)` runs with -v6 (kubectl logs its HTTP calls) and
 * remembers the last run in `.last` for post-mortems; `readUser(kubeconfig)`
 * returns jane's auth-provider config as kubectl itself reads it back.
 */
export function kubectlRunner({ kubectlBin, dir }) {
  const env = { PATH: process.env.PATH, HOME: dir, LANG: 'C' };
  const runner = {
    last: null,
    async kubectl(kubeconfig, ...args) {
      const full = ['--kubeconfig', kubeconfig, '--cache-dir', path.join(dir, 'kube-cache'), '--request-timeout', '20s', '-v', '6', ...args];
      const startedAt = Date.now();
      const r = await run(kubectlBin, full, { env, timeoutMs: 60_000 });
      runner.last = { args: [kubectlBin, ...full], startedAt, endedAt: Date.now(), ...r };
      return runner.last;
    },
    async readUser(kubeconfig) {
      const r = await run(kubectlBin, ['config', 'view', '--raw', '-o', 'json', '--kubeconfig', kubeconfig], { env });
      if (r.code !== 0) throw new Error(`kubectl config view failed (exit ${r.code}): ${r.stderr}`);
      const cfg = JSON.parse(r.stdout);
      return cfg.users.find((u) => u.name === 'jane').user['auth-provider'].config;
    },
    /** The last run as text, with what the API server saw (tokens left out). */
    describeLast(api) {
      const l = runner.last;
      if (!l) return '(kubectl was not run)';
      return (
        `----- last kubectl run: ${l.args.join(' ')} (exit ${l.code}) -----\n` +
        `stdout:\n${l.stdout}\nstderr:\n${l.stderr}\n` +
        (api ? `API server saw: ${JSON.stringify(api.seen.map(({ token, ...r }) => r), null, 1)}\n` : '')
      );
    },
  };
  return runner;
}

/**
 * Start `cmd args` in the background inside a pseudo-terminal (util-linux `script`), so that its
 * stdin is a terminal: kubectl tells an exec plugin `interactive: true` only then
 * (`interactiveMode: IfAvailable`), and `keygate login` starts a sign-in only when interactive.
 * What the command writes to the terminal (its stderr, and its stdout unless `stdoutFile` takes
 * it) is collected; line ends come back as \r\n.
 *
 * Returns {pid, output(), exited (a promise of {code, signal}), waitFor(regex, timeoutMs), stop()}.
 */
export function startInTerminal(cmd, args, { env, stdoutFile } = {}) {
  const q = (s) => `'${String(s).replace(/'/g, `'\\''`)}'`;
  const line = `exec ${[cmd, ...args].map(q).join(' ')}${stdoutFile ? ` >${q(stdoutFile)}` : ''}`;
  // script's own stdin stays an open pipe: at EOF it would hang up the terminal.
  const child = spawn('script', ['--quiet', '--return', '--flush', '--command', line, '/dev/null'], {
    env: env ?? process.env,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let output = '';
  let result = null;
  const listeners = new Set();
  const notify = () => listeners.forEach((f) => f());
  child.stdout.setEncoding('utf8').on('data', (d) => {
    output += d;
    notify();
  });
  child.stderr.setEncoding('utf8').on('data', (d) => {
    output += d;
    notify();
  });
  child.stdin.on('error', () => {});
  const exited = new Promise((resolve) => {
    child.on('error', (error) => resolve((result = { code: null, signal: null, error: String(error) })));
    child.on('close', (code, signal) => resolve((result = { code, signal })));
  }).finally(notify);
  return {
    pid: child.pid,
    command: line,
    output: () => output,
    exited,
    /** Resolves the first match of `regex` in the output; rejects on exit or timeout. */
    waitFor(regex, timeoutMs = 30_000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => done(new Error(`no ${regex} within ${timeoutMs} ms; output so far:\n${output}`)), timeoutMs);
        const check = () => {
          const m = regex.exec(output);
          if (m) done(null, m);
          else if (result) done(new Error(`exited (${JSON.stringify(result)}) without ${regex}; output:\n${output}`));
        };
        const done = (err, m) => {
          clearTimeout(timer);
          listeners.delete(check);
          if (err) reject(err);
          else resolve(m);
        };
        listeners.add(check);
        check();
      });
    },
    /** SIGTERM, then SIGKILL after 3 s (closing the terminal hangs up kubectl and its plugin). */
    async stop() {
      if (result) return result;
      child.stdin.end();
      try {
        process.kill(child.pid, 'SIGTERM');
      } catch {
        /* gone */
      }
      const r = await Promise.race([exited, new Promise((res) => setTimeout(res, 3_000).unref())]);
      if (r) return r;
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
      return exited;
    },
  };
}
