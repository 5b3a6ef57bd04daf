// The authenticator side of the interoperability tests: real Redis, real nginx configured as
// ingress-nginx configures `auth-url`/`auth-signin`, the real `keygate authenticator` binary, and
// a small application that shows who it was told the user is. Every server listens on
// 127.0.0.1 on a free port and is stopped by PID.
import { spawn } from 'node:child_process';
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { freePort, keygateBin, run } from './keygate.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export const CLIENT_ID = 'app-web-dex-authenticator';
export const SESSION_COOKIE = '_keygate_auth';

/** The absolute path of `binary` in the usual system folders, or null. */
export function findTool(binary) {
  for (const d of ['/usr/sbin', '/usr/bin', '/usr/local/sbin', '/usr/local/bin', '/sbin', '/bin']) {
    const p = path.join(d, binary);
    if (existsSync(p)) return p;
  }
  return null;
}

/** Does `keygate authenticator --help` succeed? */
export async function authenticatorAvailable() {
  const bin = keygateBin();
  if (!existsSync(bin)) return false;
  try {
    return (await run(bin, ['authenticator', '--help'], { timeoutMs: 15_000 })).code === 0;
  } catch {
    return false;
  }
}

async function waitTcp(port, proc, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (proc.exited) throw new Error(`${proc.name} exited during start-up (${JSON.stringify(proc.exited)}):\n${proc.log()}`);
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${proc.name} did not listen on ${port}:\n${proc.log()}`);
    await sleep(50);
  }
}

async function waitHttp(url, proc, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    if (proc.exited) throw new Error(`${proc.name} exited during start-up (${JSON.stringify(proc.exited)}):\n${proc.log()}`);
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2_000) });
      await res.arrayBuffer();
      if (res.status === 200) return;
      last = `${res.status}`;
    } catch (err) {
      last = String(err?.cause?.code ?? err?.message ?? err);
    }
    if (Date.now() > deadline) throw new Error(`${proc.name} not ready at ${url} (${last}):\n${proc.log()}`);
    await sleep(100);
  }
}

/**
 * Spawn a server with its output in `<dir>/<logName>`; returns {name, pid, log(), dumpLog(),
 * stop()} where stop() sends SIGTERM, then SIGKILL after 5 s.
 */
export function startProcess(name, cmd, args, { dir, logName, env }) {
  const logPath = path.join(dir, logName);
  const fd = openSync(logPath, 'a');
  const child = spawn(cmd, args, { stdio: ['ignore', fd, fd], env: env ?? process.env });
  closeSync(fd);
  const proc = { name, pid: child.pid, logPath, exited: null };
  const exit = new Promise((resolve) => {
    child.on('exit', (code, signal) => resolve((proc.exited = { code, signal })));
    child.on('error', (error) => resolve((proc.exited = { code: null, signal: null, error: String(error) })));
  });
  proc.log = () => (existsSync(logPath) ? readFileSync(logPath, 'utf8') : '');
  proc.dumpLog = () => process.stderr.write(`\n----- ${name} log (${logPath}) -----\n${proc.log()}\n`);
  proc.stop = async () => {
    if (proc.exited) return proc.exited;
    try {
      process.kill(child.pid, 'SIGTERM');
    } catch {
      /* gone */
    }
    const done = await Promise.race([exit, sleep(5_000).then(() => null)]);
    if (done) return done;
    try {
      process.kill(child.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
    return exit;
  };
  return proc;
}

/** redis-server in the foreground, persisting nothing. Returns the process plus {port, url}. */
export async function startRedis(dir) {
  const port = await freePort();
  const data = path.join(dir, `redis-${port}`);
  mkdirSync(data, { recursive: true });
  const proc = startProcess(
    'redis-server',
    findTool('redis-server') ?? 'redis-server',
    ['--bind', '127.0.0.1', '--port', String(port), '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--dir', data],
    { dir, logName: `redis-${port}.log` },
  );
  await waitTcp(port, proc);
  return Object.assign(proc, { port, url: `redis://127.0.0.1:${port}/0` });
}

/**
 * nginx as ingress-nginx configures `auth-url`/`auth-signin`: TLS on 127.0.0.1:`port`,
 * `auth_request` against the authenticators, the app behind it, `/dex-authenticator/` proxied,
 * `/bye` a public "signed out" page. One process (`master_process off`), stopped by PID.
 */
export async function startNginx({ dir, port, certFile, keyFile, authPorts, appPort }) {
  const root = path.join(dir, `nginx-${port}`);
  mkdirSync(path.join(root, 'tmp'), { recursive: true });
  chmodSync(path.join(root, 'tmp'), 0o777);
  const servers = authPorts.map((p) => `    server 127.0.0.1:${p};`).join('\n');
  const conf = `daemon off;
master_process off;
worker_processes 1;
pid ${root}/nginx.pid;
error_log ${root}/error.log info;
events { worker_connections 512; }
http {
  default_type text/html;
  access_log ${root}/access.log;
  client_body_temp_path ${root}/tmp/body;
  proxy_temp_path ${root}/tmp/proxy;
  fastcgi_temp_path ${root}/tmp/fastcgi;
  uwsgi_temp_path ${root}/tmp/uwsgi;
  scgi_temp_path ${root}/tmp/scgi;
  upstream authenticator {
${servers}
  }
  server {
    listen 127.0.0.1:${port} ssl;
    ssl_certificate ${certFile};
    ssl_certificate_key ${keyFile};
    location / {
      auth_request /_auth;
      auth_request_set $auth_user $upstream_http_x_auth_request_user;
      auth_request_set $auth_email $upstream_http_x_auth_request_email;
      auth_request_set $auth_groups $upstream_http_x_auth_request_groups;
      auth_request_set $auth_authorization $upstream_http_authorization;
      auth_request_set $auth_cookie $upstream_http_set_cookie;
      add_header Set-Cookie $auth_cookie;
      error_page 401 = @signin;
      proxy_set_header X-Auth-Request-User $auth_user;
      proxy_set_header X-Auth-Request-Email $auth_email;
      proxy_set_header X-Auth-Request-Groups $auth_groups;
      proxy_set_header Authorization $auth_authorization;
      proxy_pass http://127.0.0.1:${appPort};
    }
    location = /_auth {
      internal;
      proxy_pass http://authenticator/dex-authenticator/auth;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_set_header X-Forwarded-For $remote_addr;
    }
    # ingress-nginx escapes rd with Lua; plain nginx cannot (keep test URLs to one query parameter).
    location @signin {
      return 302 https://$http_host/dex-authenticator/sign_in?rd=$scheme://$http_host$request_uri;
    }
    location /dex-authenticator/ {
      proxy_pass http://authenticator;
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $remote_addr;
    }
    location = /bye {
      return 200 "<!doctype html><title>Signed out</title><h1>Signed out</h1><p>You have signed out of the application.</p>";
    }
  }
}
`;
  const confPath = path.join(root, 'nginx.conf');
  writeFileSync(confPath, conf);
  const bin = findTool('nginx') ?? 'nginx';
  const t = await run(bin, ['-t', '-p', root, '-c', confPath, '-e', path.join(root, 'error.log')]);
  if (t.code !== 0) throw new Error(`nginx -t failed: ${t.stderr}`);
  const proc = startProcess('nginx', bin, ['-p', root, '-c', confPath, '-e', path.join(root, 'error.log')], {
    dir: root,
    logName: 'stderr.log',
  });
  await waitTcp(port, proc);
  proc.errorLog = () => (existsSync(path.join(root, 'error.log')) ? readFileSync(path.join(root, 'error.log'), 'utf8') : '');
  return Object.assign(proc, { port });
}

/** The DexAuthenticator manifest (client id app-web-dex-authenticator, secret auth-secret). */
export function dexAuthenticatorYaml({ domain, signOutURL, kubernetes = true }) {
  return `---
apiVersion: deckhouse.io/v1
kind: DexAuthenticator
metadata:
  name: app
  namespace: web${kubernetes ? '\n  annotations: {dexauthenticator.deckhouse.io/allow-access-to-kubernetes: ""}' : ''}
spec:
  applicationDomain: "${domain}"
  sendAuthorizationHeader: true
  keepUsersLoggedInFor: 168h
${signOutURL ? `  signOutURL: "${signOutURL}"\n` : ''}  allowedGroups: [devs]
  whitelistSourceRanges: [127.0.0.0/8]
  secret: auth-secret
`;
}

export function authenticatorConfigYaml({ port, issuer, cookieSecret, sessionStore, upstream }) {
  return `---
apiVersion: keygate.io/v1alpha1
kind: AuthenticatorConfig
spec:
  listen: 127.0.0.1:${port}
  issuer: ${issuer}
  cookieSecret: "${cookieSecret}"
  sessionStore: ${sessionStore}
  trustedProxies: [127.0.0.1/32]
  refreshBefore: 60s
${upstream ? `  upstream: ${upstream}\n` : ''}`;
}

/** `keygate authenticator --config <dir>/authenticator-<port>.yaml`, ready at /healthz. */
export async function startAuthenticator({ dir, port, yaml }) {
  const configPath = path.join(dir, `authenticator-${port}.yaml`);
  writeFileSync(configPath, yaml);
  const proc = startProcess('keygate authenticator', keygateBin(), ['authenticator', '--config', configPath], {
    dir,
    logName: `authenticator-${port}.log`,
    env: { RUST_BACKTRACE: '1', ...process.env },
  });
  await waitHttp(`http://127.0.0.1:${port}/healthz`, proc);
  return Object.assign(proc, { port, configPath });
}

const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/**
 * The protected application: an HTML page naming the user nginx passed on (X-Auth-Request-*,
 * Authorization). Returns {port, seen (every request's headers), close()}.
 */
export async function startApp() {
  const seen = [];
  const server = http.createServer((req, res) => {
    seen.push({ method: req.method, url: req.url, headers: req.headers });
    const email = req.headers['x-auth-request-email'] ?? '(nobody)';
    const groups = req.headers['x-auth-request-groups'] ?? '';
    const bearer = /^Bearer /.test(req.headers.authorization ?? '');
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(`<!doctype html><html><head><title>Protected app</title></head>
<body style="font-family: sans-serif; margin: 3em">
<h1>Protected app</h1>
<p>Signed in as <b id="email">${escapeHtml(email)}</b></p>
<p>Groups: <span id="groups">${escapeHtml(groups)}</span></p>
<p>ID token forwarded: <span id="bearer">${bearer ? 'yes' : 'no'}</span></p>
<p>Path: <code>${escapeHtml(req.url)}</code></p>
<p><a href="/dex-authenticator/sign_out?rd=/bye">Sign out</a></p>
</body></html>`);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: server.address().port,
    seen,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
