// Helpers shared by the interoperability tests: start/stop the real keygate
// binary, hash passwords with it, and walk its HTML login form like a
// browser-less user agent would.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, openSync, closeSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const INTEROP_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const REPO_DIR = path.resolve(INTEROP_DIR, '..');

/** Path of the keygate binary under test (override with KEYGATE_BIN). */
export function keygateBin() {
  return process.env.KEYGATE_BIN || path.join(REPO_DIR, 'target', 'debug', 'keygate');
}

/** A TCP port that was free on 127.0.0.1 a moment ago. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** A fresh temporary directory (removed by the caller, or left for post-mortem). */
export async function makeTempDir(prefix = 'keygate-interop-') {
  return mkdtemp(path.join(tmpdir(), prefix));
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
/** A timer that does not keep Node alive (for timeouts raced against a process exit). */
const unrefSleep = (ms) => new Promise((r) => setTimeout(r, ms).unref());

/**
 * Run a command, feeding `input` on stdin. Resolves {code, signal, stdout, stderr}.
 */
export function run(cmd, args, { input, env, timeoutMs = 60_000, cwd } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: env ?? process.env, cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      stderr += `\n[interop] ${cmd} timed out after ${timeoutMs} ms, killing it\n`;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
    child.stdin.on('error', () => {}); // the child may exit before reading stdin
    if (input !== undefined) child.stdin.end(input);
    else child.stdin.end();
  });
}

/** bcrypt-hash a password by piping it (without newline) into `keygate hash-password`. */
export async function hashPassword(password) {
  const bin = keygateBin();
  const res = await run(bin, ['hash-password'], { input: password, timeoutMs: 30_000 });
  const hash = res.stdout.trim().split(/\s+/).find((w) => /^\$2[abxy]?\$\d\d\$/.test(w));
  if (res.code !== 0 || !hash) {
    throw new Error(
      `\`${bin} hash-password\` failed (exit ${res.code}, signal ${res.signal}); ` +
        `stdout=${JSON.stringify(res.stdout)} stderr=${JSON.stringify(res.stderr)}`,
    );
  }
  return hash;
}

/** Is the binary there and does `keygate serve --help` succeed? */
export async function keygateAvailable() {
  const bin = keygateBin();
  if (!existsSync(bin)) return false;
  try {
    const res = await run(bin, ['serve', '--help'], { timeoutMs: 15_000 });
    return res.code === 0;
  } catch {
    return false;
  }
}

/**
 * Start `keygate serve --config <dir>/config.yaml`.
 *
 * configYaml: a string, or a function ({port, issuer, dir}) => string, called
 * with a freshly chosen free port and the temp dir (for sqlite paths).
 * issuer: defaults to http://127.0.0.1:<port>/ (or the one found in the YAML
 * when configYaml is a string).
 *
 * Returns {issuer, port, dir, configPath, logPath, pid, log(), dumpLog(), stop()}.
 */
export async function startKeygate({ configYaml, port, issuer, dir, readyTimeoutMs = 20_000 } = {}) {
  dir ??= await makeTempDir();
  port ??= await freePort();
  let yaml;
  if (typeof configYaml === 'function') {
    issuer ??= `http://127.0.0.1:${port}/`;
    yaml = configYaml({ port, issuer, dir });
  } else {
    yaml = configYaml;
    if (!issuer) {
      const m = /^\s*issuer:\s*["']?([^"'\s]+)["']?\s*$/m.exec(yaml);
      if (!m) throw new Error('startKeygate: no issuer given and none found in configYaml');
      issuer = m[1];
    }
  }
  if (!issuer.endsWith('/')) issuer += '/';
  const configPath = path.join(dir, 'config.yaml');
  writeFileSync(configPath, yaml);
  const logPath = path.join(dir, 'keygate.log');
  const logFd = openSync(logPath, 'a');
  const bin = keygateBin();
  if (!existsSync(bin)) {
    closeSync(logFd);
    throw new Error(`keygate binary not found at ${bin} (set KEYGATE_BIN)`);
  }
  const child = spawn(bin, ['serve', '--config', configPath], {
    stdio: ['ignore', logFd, logFd],
    env: { KEYGATE_LOG: 'info', RUST_BACKTRACE: '1', ...process.env },
  });
  closeSync(logFd);
  let exited = null;
  const exitPromise = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      exited = { code, signal };
      resolve(exited);
    });
    child.on('error', (err) => {
      exited = { code: null, signal: null, error: err };
      resolve(exited);
    });
  });

  const log = () => (existsSync(logPath) ? readFileSync(logPath, 'utf8') : '');
  const dumpLog = (why = '') => {
    process.stderr.write(
      `\n----- keygate log (${logPath})${why ? ' ' + why : ''} -----\n${log()}\n----- end of keygate log -----\n`,
    );
  };
  const stop = async () => {
    if (exited) return exited;
    try {
      process.kill(child.pid, 'SIGTERM');
    } catch {
      /* already gone */
    }
    const res = await Promise.race([exitPromise, unrefSleep(5_000).then(() => null)]);
    if (res) return res;
    try {
      process.kill(child.pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
    return exitPromise;
  };

  const deadline = Date.now() + readyTimeoutMs;
  let lastErr = 'no attempt';
  for (;;) {
    if (exited) {
      const msg = `keygate exited during startup (${JSON.stringify(exited)}); config:\n${yaml}\nlog:\n${log()}`;
      throw new Error(msg);
    }
    try {
      const res = await fetch(new URL('healthz', issuer), { signal: AbortSignal.timeout(2_000) });
      await res.arrayBuffer();
      if (res.status === 200) break;
      lastErr = `GET ${issuer}healthz -> ${res.status}`;
    } catch (err) {
      lastErr = String(err?.cause?.code ?? err?.message ?? err);
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(
        `keygate not ready after ${readyTimeoutMs} ms (last: ${lastErr}); config:\n${yaml}\nlog:\n${log()}`,
      );
    }
    await sleep(100);
  }
  return { issuer, port, dir, configPath, logPath, pid: child.pid, process: child, log, dumpLog, stop };
}

/** Remove a temp dir unless KEEP_TMP is set. */
export async function cleanupDir(dir) {
  if (dir && !process.env.KEEP_TMP) await rm(dir, { recursive: true, force: true });
}

// ---------------------------------------------------------------------------
// Users, groups, clients
// ---------------------------------------------------------------------------

/** The standard test configuration: jane (devs), client dex-client-app@web. */
export function standardConfig({
  issuer,
  port,
  dir,
  storage = 'sqlite',
  passwordHash,
  redirectURIs = ['http://127.0.0.1:9/callback'],
  idTokenTTL = '10m',
  // Dex semantics: within reuseInterval of a refresh token's last use, refreshing hands back the
  // SAME refresh token (Keygate defaults to Deckhouse's 2m). 0s makes every refresh rotate.
  reuseInterval = '0s',
  // More KeygateConfig spec lines, indented by two spaces (e.g. a kubeconfigGenerator list).
  extraSpec = '',
}) {
  const store =
    storage === 'sqlite' ? `{type: sqlite, path: ${JSON.stringify(path.join(dir, 'keygate.db'))}}` : '{type: memory}';
  return `apiVersion: keygate.io/v1alpha1
kind: KeygateConfig
spec:
  issuer: ${issuer}
  listen: 127.0.0.1:${port}
  storage: ${store}
  idTokenTTL: ${idTokenTTL}
  refreshTokens: {reuseInterval: ${reuseInterval}}
${extraSpec ? extraSpec.replace(/\n?$/, '\n') : ''}---
apiVersion: deckhouse.io/v1
kind: User
metadata: {name: jane}
spec: {email: jane@example.com, password: ${JSON.stringify(passwordHash)}}
---
apiVersion: deckhouse.io/v1alpha1
kind: Group
metadata: {name: devs}
spec: {name: devs, members: [{kind: User, name: jane}]}
---
apiVersion: deckhouse.io/v1alpha1
kind: Group
metadata: {name: staff}
spec: {name: staff, members: [{kind: Group, name: devs}]}
---
apiVersion: deckhouse.io/v1
kind: DexClient
metadata:
  name: app
  namespace: web
  annotations: {keygate.io/allow-access-to-kubernetes: "true"}
spec: {redirectURIs: ${JSON.stringify(redirectURIs)}, secret: app-secret}
`;
}

// jane is in devs directly and in staff through nesting (staff has member group devs).
export const JANE = { login: 'jane@example.com', password: 'secret', email: 'jane@example.com', groups: ['devs', 'staff'] };
export const APP_CLIENT = { id: 'dex-client-app@web', secret: 'app-secret' };

// ---------------------------------------------------------------------------
// PKCE
// ---------------------------------------------------------------------------

export function b64url(buf) {
  return Buffer.from(buf).toString('base64url');
}

export function pkcePair() {
  const verifier = b64url(randomBytes(32));
  const challenge = b64url(createHash('sha256').update(verifier).digest());
  return { verifier, challenge };
}

// ---------------------------------------------------------------------------
// Login through the HTML form without a browser
// ---------------------------------------------------------------------------

export class LoginError extends Error {
  constructor(message, { status, url, body, trace } = {}) {
    super(message);
    this.name = 'LoginError';
    this.status = status;
    this.url = url;
    this.body = body;
    this.trace = trace;
  }
}

const ENTITIES = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", '#39': "'", '#x27': "'", '#x2F': '/', '#x2f': '/', '#47': '/' };
function decodeEntities(s) {
  return s.replace(/&(#x[0-9a-f]+|#\d+|[a-z]+);/gi, (m, e) => {
    if (e in ENTITIES) return ENTITIES[e];
    if (/^#x/i.test(e)) return String.fromCodePoint(parseInt(e.slice(2), 16));
    if (/^#/.test(e)) return String.fromCodePoint(parseInt(e.slice(1), 10));
    return m;
  });
}

function parseAttrs(tag) {
  const attrs = {};
  const re = /([^\s=<>"'/]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+)))?/g;
  const inner = tag.replace(/^<\s*[a-z0-9]+/i, '').replace(/\/?>$/, '');
  let m;
  while ((m = re.exec(inner))) {
    attrs[m[1].toLowerCase()] = decodeEntities(m[2] ?? m[3] ?? m[4] ?? '');
  }
  return attrs;
}

/** Parse every <form> of an HTML page: [{method, action, inputs: [{name,type,value}], buttons, html}]. */
export function parseForms(html) {
  const forms = [];
  const re = /(<form\b[^>]*>)([\s\S]*?)<\/form\s*>/gi;
  let m;
  while ((m = re.exec(html))) {
    const a = parseAttrs(m[1]);
    const body = m[2];
    const inputs = [];
    const ire = /<input\b[^>]*>/gi;
    let im;
    while ((im = ire.exec(body))) {
      const ia = parseAttrs(im[0]);
      inputs.push({ name: ia.name, type: (ia.type || 'text').toLowerCase(), value: ia.value ?? '' });
    }
    const buttons = [];
    const bre = /<button\b[^>]*>/gi;
    let bm;
    while ((bm = bre.exec(body))) {
      const ba = parseAttrs(bm[0]);
      buttons.push({ name: ba.name, type: (ba.type || 'submit').toLowerCase(), value: ba.value ?? '' });
    }
    forms.push({ method: (a.method || 'get').toLowerCase(), action: a.action, inputs, buttons, html: m[0] });
  }
  return forms;
}

class CookieJar {
  constructor() {
    this.cookies = new Map();
  }
  store(res) {
    const list = typeof res.headers.getSetCookie === 'function' ? res.headers.getSetCookie() : [];
    for (const c of list) {
      const [pair, ...attrs] = c.split(';');
      const eq = pair.indexOf('=');
      if (eq < 0) continue;
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      const expired = attrs.some(
        (x) => /^\s*max-age\s*=\s*(-\d+|0)\s*$/i.test(x) || (/^\s*expires\s*=/i.test(x) && Date.parse(x.split('=')[1]) < Date.now()),
      );
      if (expired || value === '') this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
  }
  header() {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  }
}

/**
 * Walk the provider's login UI without a browser: GET authUrl, follow every
 * redirect by hand (relative Locations resolved), fill the form that has a
 * password field (login + password), submit it, follow on (an approval form
 * without a password field is submitted as-is) until a redirect to the
 * client's redirect_uri. Returns that Location (absolute URL string, carrying
 * code & state, or error).
 *
 * Throws LoginError when the provider answers with the login form again (wrong
 * credentials), with a 4xx/5xx, or when no way forward is found.
 *
 * `redirectUri` names the callback to stop at when authUrl does not carry one (the device flow
 * starts at `<issuer>auth/local/login?state=...`). `trace`: an array that receives one line per
 * request (`METHOD url -> status [Location: ...]`), also on success.
 */
export async function loginViaForm(authUrl, login, password, { maxSteps = 20, redirectUri, trace = [], rewrite = (u) => u } = {}) {
  const auth = new URL(authUrl);
  redirectUri ??= auth.searchParams.get('redirect_uri');
  if (!redirectUri) throw new Error('loginViaForm: authUrl has no redirect_uri (pass one)');
  const target = new URL(redirectUri);
  const isCallback = (u) => u.origin === target.origin && u.pathname === target.pathname;
  const jar = new CookieJar();
  let url = auth;
  let method = 'GET';
  let body;
  let submittedCredentials = false;

  for (let step = 0; step < maxSteps; step++) {
    const headers = { accept: 'text/html,application/xhtml+xml' };
    const cookie = jar.header();
    if (cookie) headers.cookie = cookie;
    if (body !== undefined) headers['content-type'] = 'application/x-www-form-urlencoded';
    const res = await fetch(url, { method, headers, body, redirect: 'manual' });
    jar.store(res);
    const text = await res.text();
    const location = res.headers.get('location');
    trace.push(`${method} ${url.href} -> ${res.status}${location ? ' Location: ' + location : ''}`);

    if (res.status >= 300 && res.status < 400 && location) {
      // `rewrite`: what an attacker in the middle of a redirect could change (tests of refusals).
      const next = rewrite(new URL(location, url));
      if (isCallback(next)) return next.href;
      url = next;
      method = 'GET';
      body = undefined;
      continue;
    }
    const forms = parseForms(text).filter((f) => f.method === 'post');
    const loginForm = forms.find((f) => f.inputs.some((i) => i.type === 'password' || i.name === 'password'));
    if (res.status >= 400 && !loginForm) {
      throw new LoginError(`login failed: ${method} ${url.href} answered ${res.status}`, {
        status: res.status,
        url: url.href,
        body: text,
        trace,
      });
    }
    if (loginForm) {
      if (submittedCredentials) {
        throw new LoginError(`login rejected: the login form came back (HTTP ${res.status})`, {
          status: res.status,
          url: url.href,
          body: text,
          trace,
        });
      }
      const params = new URLSearchParams();
      for (const i of loginForm.inputs) {
        if (!i.name) continue;
        if (i.name === 'login' || i.name === 'username' || i.name === 'email') params.set(i.name, login);
        else if (i.name === 'password' || i.type === 'password') params.set(i.name, password);
        else if (i.type === 'checkbox' || i.type === 'radio') continue;
        else if (i.type !== 'submit' || i.value) params.set(i.name, i.value);
      }
      if (!params.has('login')) params.set('login', login);
      if (!params.has('password')) params.set('password', password);
      url = new URL(loginForm.action || url.href, url);
      method = 'POST';
      body = params.toString();
      submittedCredentials = true;
      continue;
    }
    if (res.status === 200 && forms.length > 0) {
      // e.g. an approval page: submit its first POST form with hidden inputs + first named button.
      const f = forms[0];
      const params = new URLSearchParams();
      for (const i of f.inputs) if (i.name && i.type !== 'checkbox') params.set(i.name, i.value);
      const btn = f.buttons.find((b) => b.name && b.type === 'submit');
      if (btn && !params.has(btn.name)) params.set(btn.name, btn.value);
      url = new URL(f.action || url.href, url);
      method = 'POST';
      body = params.toString();
      continue;
    }
    throw new LoginError(`login stuck: ${method} ${url.href} answered ${res.status} without a redirect or a form`, {
      status: res.status,
      url: url.href,
      body: text,
      trace,
    });
  }
  throw new LoginError(`login did not finish within ${maxSteps} steps`, { trace });
}

/** Build a Dex-style /auth URL by hand. */
export function authorizeUrl(issuer, params) {
  const u = new URL('auth', issuer);
  for (const [k, v] of Object.entries(params)) if (v !== undefined) u.searchParams.set(k, v);
  return u;
}

/** Fetch the discovery document. */
export async function discover(issuer) {
  const res = await fetch(new URL('.well-known/openid-configuration', issuer));
  if (res.status !== 200) throw new Error(`discovery ${issuer} -> ${res.status}: ${await res.text()}`);
  return res.json();
}

/**
 * Log in as `user` with client `client` and exchange the code at the token
 * endpoint by hand (HTTP Basic client auth, PKCE S256). Returns the token
 * response JSON.
 */
export async function loginAndExchange(issuer, { client = APP_CLIENT, user = JANE, scope, redirectUri }) {
  const meta = await discover(issuer);
  const { verifier, challenge } = pkcePair();
  const state = b64url(randomBytes(12));
  const nonce = b64url(randomBytes(12));
  const u = new URL(meta.authorization_endpoint);
  for (const [k, v] of Object.entries({
    client_id: client.id,
    redirect_uri: redirectUri,
    response_type: 'code',
    scope,
    state,
    nonce,
    code_challenge: challenge,
    code_challenge_method: 'S256',
  }))
    u.searchParams.set(k, v);
  const loc = new URL(await loginViaForm(u.href, user.login, user.password));
  if (loc.searchParams.get('state') !== state) throw new Error(`state mismatch in ${loc.href}`);
  const code = loc.searchParams.get('code');
  if (!code) throw new Error(`no code in redirect ${loc.href}`);
  const res = await fetch(meta.token_endpoint, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      accept: 'application/json',
      authorization:
        'Basic ' +
        Buffer.from(`${encodeURIComponent(client.id)}:${encodeURIComponent(client.secret)}`).toString('base64'),
    },
    body: new URLSearchParams({
      grant_type: 'authorization_code',
      code,
      redirect_uri: redirectUri,
      code_verifier: verifier,
    }).toString(),
  });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`token exchange -> ${res.status}: ${text}`);
  const json = JSON.parse(text);
  return { ...json, nonce, meta };
}

/** Decode a JWT payload without verifying it. */
export function decodeJwtPayload(jwt) {
  const parts = String(jwt).split('.');
  if (parts.length !== 3) throw new Error(`not a JWS compact token: ${jwt}`);
  return JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
}

/**
 * keygate's Prometheus counters at `<issuer>metrics`: {name: value} for every unlabelled
 * `keygate_*` sample.
 */
export async function keygateMetrics(issuer) {
  const res = await fetch(new URL('metrics', issuer));
  const text = await res.text();
  if (res.status !== 200) throw new Error(`GET ${issuer}metrics -> ${res.status}: ${text}`);
  const out = {};
  for (const m of text.matchAll(/^(keygate_\w+) (\d+)$/gm)) out[m[1]] = Number(m[2]);
  return out;
}

/**
 * The browser half of the device flow (RFC 8628) without a browser and without cookies carried
 * over: POST `<issuer>device` with the user code, walk the password form, then GET the
 * `<issuer>device/callback` it redirects to. Returns {trace, callbackUrl, status, body} of that
 * last page; throws LoginError with the trace when a step fails.
 */
export async function approveDevice(issuer, userCode, { login = JANE.login, password = JANE.password } = {}) {
  const deviceUrl = new URL('device', issuer);
  const trace = [];
  const res = await fetch(deviceUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'text/html' },
    body: new URLSearchParams({ user_code: userCode }).toString(),
    redirect: 'manual',
  });
  const text = await res.text();
  const location = res.headers.get('location');
  trace.push(`POST ${deviceUrl.href} user_code=${userCode} -> ${res.status}${location ? ' Location: ' + location : ''}`);
  if (res.status < 300 || res.status >= 400 || !location) {
    throw new LoginError(`POST ${deviceUrl.href} answered ${res.status} without a redirect`, {
      status: res.status,
      url: deviceUrl.href,
      body: text,
      trace,
    });
  }
  const callback = new URL('device/callback', issuer).href;
  let callbackUrl;
  try {
    callbackUrl = await loginViaForm(new URL(location, deviceUrl).href, login, password, { redirectUri: callback });
  } catch (err) {
    if (err instanceof LoginError) err.trace = [...trace, ...(err.trace ?? [])];
    throw err;
  }
  const done = await fetch(callbackUrl, { headers: { accept: 'text/html' }, redirect: 'manual' });
  const body = await done.text();
  trace.push(`GET ${callbackUrl} -> ${done.status}`);
  return { trace, callbackUrl, status: done.status, body };
}

export function ensureDir(dir) {
  mkdirSync(dir, { recursive: true });
  return dir;
}
