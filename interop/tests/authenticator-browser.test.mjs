// Headless Chromium (Debian's, driven by playwright-core) in front of an application protected by
// `keygate authenticator` behind nginx configured as ingress-nginx configures
// auth-url/auth-signin, with Redis sessions: sign in, see the app, sign out (back to rd=/bye), and the
// next visit asks for the password again. Screenshots in screenshots/authenticator-*.png.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { chromium } from 'playwright-core';
import {
  INTEROP_DIR,
  JANE,
  cleanupDir,
  freePort,
  hashPassword,
  keygateAvailable,
  makeTempDir,
  standardConfig,
  startKeygate,
} from '../lib/keygate.mjs';
import { makeCerts } from '../lib/kube.mjs';
import {
  SESSION_COOKIE,
  authenticatorAvailable,
  authenticatorConfigYaml,
  dexAuthenticatorYaml,
  findTool,
  startApp,
  startAuthenticator,
  startNginx,
  startRedis,
} from '../lib/authenticator.mjs';

const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const SCREENSHOTS = path.join(INTEROP_DIR, 'screenshots');
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage',
  // nginx serves a certificate from a throwaway CA.
  '--ignore-certificate-errors',
];

const skip = !existsSync(CHROMIUM)
  ? `${CHROMIUM} is absent: apt-get install -y --no-install-recommends chromium (or set CHROMIUM_BIN)`
  : !(await keygateAvailable())
    ? 'keygate binary missing (build it or set KEYGATE_BIN)'
    : !(await authenticatorAvailable())
      ? '`keygate authenticator --help` fails: this keygate has no authenticator'
      : !findTool('nginx')
        ? 'nginx is absent: apt-get install -y --no-install-recommends nginx'
        : !findTool('redis-server')
          ? 'redis-server is absent: apt-get install -y --no-install-recommends redis-server'
          : false;
if (skip) console.log(`# authenticator browser test skipped: ${skip}`);

describe('Chromium through nginx auth_request and keygate authenticator', { skip }, () => {
  let dir;
  let kg;
  let redis;
  let auth;
  let nginx;
  let app;
  let context;
  let profileDir;
  let lastPage;
  let origin;

  before(async () => {
    mkdirSync(SCREENSHOTS, { recursive: true });
    dir = await makeTempDir('keygate-authenticator-browser-');
    const certs = await makeCerts(dir);
    const nginxPort = await freePort();
    const authPort = await freePort();
    const domain = `127.0.0.1:${nginxPort}`;
    origin = `https://${domain}`;
    const manifest = dexAuthenticatorYaml({ domain, signOutURL: `${origin}/bye` });
    const passwordHash = await hashPassword(JANE.password);
    kg = await startKeygate({
      dir,
      configYaml: (o) => standardConfig({ ...o, storage: 'memory', passwordHash }) + manifest,
    });
    redis = await startRedis(dir);
    app = await startApp();
    auth = await startAuthenticator({
      dir,
      port: authPort,
      yaml:
        manifest +
        authenticatorConfigYaml({
          port: authPort,
          issuer: kg.issuer,
          cookieSecret: 'browser-test-cookie-secret-0123456789abcdef',
          sessionStore: `{type: redis, url: "${redis.url}"}`,
        }),
    });
    nginx = await startNginx({
      dir,
      port: nginxPort,
      certFile: path.join(dir, 'server.crt'),
      keyFile: path.join(dir, 'server.key'),
      authPorts: [authPort],
      appPort: app.port,
    });
    assert.ok(certs.ca);
    profileDir = await makeTempDir('keygate-chromium-');
    context = await chromium.launchPersistentContext(profileDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      ignoreHTTPSErrors: true,
      viewport: { width: 1100, height: 800 },
    });
  });

  after(async () => {
    await context?.close().catch(() => {});
    if (profileDir) await rm(profileDir, { recursive: true, force: true });
    await nginx?.stop();
    await auth?.stop();
    await redis?.stop();
    await app?.close();
    await kg?.stop();
    await cleanupDir(dir);
  });

  afterEach(async (t) => {
    if (t.passed === false) {
      if (lastPage && !lastPage.isClosed()) {
        const file = path.join(SCREENSHOTS, `authenticator-failure-${t.name.replace(/[^a-z0-9]+/gi, '-')}.png`);
        await lastPage.screenshot({ path: file, fullPage: true }).catch(() => {});
        const html = await lastPage.content().catch(() => '');
        process.stderr.write(`\n----- page at failure: ${lastPage.url()} (screenshot ${file}) -----\n${html.slice(0, 4000)}\n`);
      }
      kg?.dumpLog('(provider)');
      auth?.dumpLog();
      process.stderr.write(`\n----- nginx error.log -----\n${nginx?.errorLog?.() ?? ''}\n`);
    }
  });

  const loginForm = (page) => page.locator('input[name="password"]');

  async function signIn(page) {
    await loginForm(page).waitFor({ state: 'visible', timeout: 15_000 });
    assert.ok(page.url().startsWith(kg.issuer), `the login form is the provider's: ${page.url()}`);
    await page.locator('input[name="login"]').fill(JANE.login);
    await loginForm(page).fill(JANE.password);
    await page.screenshot({ path: path.join(SCREENSHOTS, 'authenticator-login.png'), fullPage: true });
    await Promise.all([
      page.waitForURL((u) => u.href.startsWith(origin) && !u.pathname.startsWith('/dex-authenticator/'), {
        timeout: 20_000,
      }),
      page.locator('form button[type="submit"], form input[type="submit"]').first().click(),
    ]);
  }

  test('sign in, use the app, sign out, and the next visit asks to sign in again', async () => {
    const page = await context.newPage();
    lastPage = page;

    // First visit: nginx → sign_in → the provider's login form.
    await page.goto(`${origin}/dashboard?tab=1`, { waitUntil: 'load' });
    await signIn(page);
    assert.equal(page.url(), `${origin}/dashboard?tab=1`, 'back where the user started');
    await page.locator('#email').waitFor({ timeout: 10_000 });
    assert.equal(await page.locator('#email').innerText(), JANE.email, 'the app was told who signed in');
    const groups = (await page.locator('#groups').innerText()).split(',').map((g) => g.trim());
    assert.ok(groups.includes('devs'), `groups ${groups}`);
    assert.equal(await page.locator('#bearer').innerText(), 'yes', 'the app got the ID token');
    await page.screenshot({ path: path.join(SCREENSHOTS, 'authenticator-app.png'), fullPage: true });

    const cookies = await context.cookies(origin);
    const session = cookies.find((c) => c.name === SESSION_COOKIE);
    assert.ok(session, `a ${SESSION_COOKIE} cookie: ${JSON.stringify(cookies.map((c) => c.name))}`);
    assert.equal(session.httpOnly, true);
    assert.equal(session.secure, true);
    assert.equal(session.sameSite, 'Lax');
    assert.equal(session.path, '/');

    // Signed in: other pages open without the form.
    await page.goto(`${origin}/other`, { waitUntil: 'load' });
    assert.equal(page.url(), `${origin}/other`);
    assert.equal(await page.locator('#email').innerText(), JANE.email);
    assert.equal(await loginForm(page).count(), 0);
    const last = app.seen.at(-1);
    assert.equal(last.headers['x-auth-request-email'], JANE.email);
    assert.match(last.headers.authorization ?? '', /^Bearer ey/);

    // Sign out through the app's link (sign_out?rd=/bye): cookie gone.
    await Promise.all([page.waitForURL(`${origin}/bye`, { timeout: 15_000 }), page.click('text=Sign out')]);
    assert.match(await page.locator('body').innerText(), /Signed out/);
    await page.screenshot({ path: path.join(SCREENSHOTS, 'authenticator-signed-out.png'), fullPage: true });
    const after = await context.cookies(origin);
    assert.ok(!after.some((c) => c.name === SESSION_COOKIE), 'the session cookie was cleared');

    // Next visit: the login form again.
    await page.goto(`${origin}/dashboard?tab=1`, { waitUntil: 'load' });
    await loginForm(page).waitFor({ state: 'visible', timeout: 15_000 });
    assert.ok(page.url().startsWith(kg.issuer), page.url());
    await page.screenshot({ path: path.join(SCREENSHOTS, 'authenticator-login-again.png'), fullPage: true });

    // And signing in again works.
    await signIn(page);
    assert.equal(await page.locator('#email').innerText(), JANE.email);
    await page.close();
  });
});
