// Headless Chromium (Debian's, driven by playwright-core) signs in through
// keygate's built-in demo page using the repo's quickstart configuration.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { chromium } from 'playwright-core';
import YAML from 'yaml';
import {
  INTEROP_DIR,
  REPO_DIR,
  cleanupDir,
  freePort,
  keygateAvailable,
  makeTempDir,
  startKeygate,
} from '../lib/keygate.mjs';

const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const QUICKSTART = process.env.KEYGATE_QUICKSTART || path.join(REPO_DIR, 'examples', 'quickstart.yaml');
const SCREENSHOTS = path.join(INTEROP_DIR, 'screenshots');
const DEMO_USER = { login: 'admin@example.com', password: 'password', email: 'admin@example.com' };
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage',
];

const available = await keygateAvailable();
const skip = !existsSync(CHROMIUM)
  ? `${CHROMIUM} is absent: install it with \`apt-get install -y --no-install-recommends chromium\` (or set CHROMIUM_BIN)`
  : !available
    ? 'keygate binary missing (build it or set KEYGATE_BIN)'
    : !existsSync(QUICKSTART)
      ? `${QUICKSTART} is missing`
      : false;
if (skip) console.log(`# browser test skipped: ${skip}`);

/**
 * Copy the quickstart config with every 127.0.0.1/localhost/0.0.0.0 port
 * mapped to a free one and the storage path moved into `dir`.
 * Returns {yaml, issuer, expectedGroups}.
 */
async function adaptQuickstart(dir) {
  let text = readFileSync(QUICKSTART, 'utf8');
  const ports = new Map();
  for (const m of text.matchAll(/(?:127\.0\.0\.1|localhost|0\.0\.0\.0|\[::\]|\[::1\]):(\d{2,5})\b/g)) {
    if (!ports.has(m[1])) ports.set(m[1], String(await freePort()));
  }
  text = text.replace(
    /((?:127\.0\.0\.1|localhost|0\.0\.0\.0|\[::\]|\[::1\]):)(\d{2,5})\b/g,
    (all, host, p) => host + (ports.get(p) ?? p),
  );
  const docs = YAML.parseAllDocuments(text);
  const errs = docs.flatMap((d) => d.errors);
  if (errs.length) throw new Error(`cannot parse ${QUICKSTART}: ${errs.join('; ')}`);
  const objs = docs.map((d) => d.toJS());
  const main = objs.find((o) => o?.kind === 'KeygateConfig');
  assert.ok(main, 'quickstart has a KeygateConfig document');
  const st = main.spec?.storage;
  if (st && typeof st === 'object' && 'path' in st) {
    docs[objs.indexOf(main)].setIn(['spec', 'storage', 'path'], path.join(dir, path.basename(String(st.path)) || 'keygate.db'));
  }
  const issuer = String(docs[objs.indexOf(main)].getIn(['spec', 'issuer']));
  // Which groups should the demo user end up in? Direct membership plus nesting (a Group member
  // names another group's spec.name), as Deckhouse resolves it.
  const user = objs.find((o) => o?.kind === 'User' && o.spec?.email === DEMO_USER.email);
  assert.ok(user, `quickstart defines a User with email ${DEMO_USER.email}`);
  const groupDocs = objs.filter((o) => o?.kind === 'Group');
  const gname = (g) => g.spec?.name ?? g.metadata?.name;
  const expected = new Set();
  const queue = groupDocs
    .filter((g) => (g.spec?.members ?? []).some((m) => m.kind === 'User' && m.name === user.metadata?.name))
    .map(gname);
  while (queue.length) {
    const g = queue.shift();
    if (expected.has(g)) continue;
    expected.add(g);
    for (const parent of groupDocs) {
      if ((parent.spec?.members ?? []).some((m) => m.kind === 'Group' && m.name === g)) queue.push(gname(parent));
    }
  }
  const expectedGroups = [...expected];
  const yaml = docs.map((d) => d.toString().replace(/^---[ \t]*\n/, '')).join('---\n');
  return { yaml, issuer, expectedGroups };
}

describe('Chromium sign-in through the quickstart demo page', { skip }, () => {
  let kg;
  let context;
  let profileDir;
  let expectedGroups;
  let lastPage;

  before(async () => {
    mkdirSync(SCREENSHOTS, { recursive: true });
    const dir = await makeTempDir('keygate-browser-');
    const q = await adaptQuickstart(dir);
    expectedGroups = q.expectedGroups;
    kg = await startKeygate({ configYaml: q.yaml, issuer: q.issuer, dir });
    profileDir = await makeTempDir('keygate-chromium-');
    context = await chromium.launchPersistentContext(profileDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: { width: 1100, height: 800 },
    });
  });

  after(async () => {
    await context?.close().catch(() => {});
    if (profileDir) await rm(profileDir, { recursive: true, force: true });
    await kg?.stop();
    await cleanupDir(kg?.dir);
  });

  afterEach(async (t) => {
    if (t.passed === false) {
      if (lastPage && !lastPage.isClosed()) {
        const file = path.join(SCREENSHOTS, `failure-${t.name.replace(/[^a-z0-9]+/gi, '-')}.png`);
        await lastPage.screenshot({ path: file, fullPage: true }).catch(() => {});
        const html = await lastPage.content().catch(() => '');
        process.stderr.write(`\n----- page at failure: ${lastPage.url()} (screenshot ${file}) -----\n${html.slice(0, 5000)}\n`);
      }
      kg?.dumpLog(`after failed test "${t.name}"`);
    }
  });

  /** Open <issuer>demo and get to the login form (clicking a sign-in control if the demo page has one). */
  async function openLoginForm(page) {
    await page.goto(new URL('demo', kg.issuer).href, { waitUntil: 'load' });
    const loginInput = page.locator('input[name="login"]');
    try {
      await loginInput.waitFor({ state: 'visible', timeout: 3_000 });
    } catch {
      const control = page
        .getByRole('button', { name: /sign ?in|log ?in|login|start/i })
        .or(page.getByRole('link', { name: /sign ?in|log ?in|login|start/i }))
        .first();
      await control.click({ timeout: 5_000 });
      await loginInput.waitFor({ state: 'visible', timeout: 10_000 });
    }
    // Prefer the accessible labels; fall back to the field names.
    const byLabel = page.locator('input:not([type="password"])').and(page.getByLabel(/e-?mail|user ?name|login/i)).first();
    const login = (await byLabel.count()) > 0 ? byLabel : loginInput;
    const pwLabel = page.locator('input[type="password"]').and(page.getByLabel(/password/i)).first();
    const password = (await pwLabel.count()) > 0 ? pwLabel : page.locator('input[name="password"]');
    return { login, password };
  }

  /** Submit the login form; returns what the form POST got ({status, url, origin, secFetchSite}). */
  async function submit(page, passwordField) {
    const posted = page.waitForResponse((r) => r.request().method() === 'POST', { timeout: 15_000 });
    const button = page.locator('form button[type="submit"], form input[type="submit"], form button:not([type])').first();
    if ((await button.count()) > 0) await button.click();
    else await passwordField.press('Enter');
    const res = await posted;
    const h = await res.request().allHeaders();
    await page.waitForLoadState('load');
    return { status: res.status(), url: res.url(), origin: h.origin, secFetchSite: h['sec-fetch-site'] };
  }

  /** Poll until the page shows `text`, or the login form again; explain what is shown otherwise. */
  async function outcome(page, text, timeoutMs = 15_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const body = await page.locator('body').innerText().catch(() => '');
      if (body.includes(text)) return { kind: 'result', body };
      if (await page.locator('input[name="password"]').isVisible().catch(() => false)) return { kind: 'form', body };
      if (Date.now() > deadline) return { kind: 'other', body };
      await page.waitForTimeout(200);
    }
  }

  const describePage = async (page, o, post) =>
    `page "${await page.title()}" at ${page.url()} after the form POST ` +
    `(${post.url} -> HTTP ${post.status}; the browser sent Origin: ${post.origin}, Sec-Fetch-Site: ${post.secFetchSite}): ` +
    JSON.stringify(o.body.replace(/\s+/g, ' ').slice(0, 400));

  test('demo sign-in shows the ID token claims (email, groups)', async () => {
    const page = await context.newPage();
    lastPage = page;
    const { login, password } = await openLoginForm(page);
    assert.ok(page.url().startsWith(kg.issuer), `login page served by keygate: ${page.url()}`);
    await login.fill(DEMO_USER.login);
    await password.fill(DEMO_USER.password);
    await page.screenshot({ path: path.join(SCREENSHOTS, 'login.png'), fullPage: true });

    const post = await submit(page, password);
    const o = await outcome(page, DEMO_USER.email);
    assert.equal(o.kind, 'result', `expected the claims page, got ${await describePage(page, o, post)}`);
    assert.equal(await page.locator('input[type="password"]').count(), 0, 'left the login form');
    const text = o.body;
    assert.ok(text.includes(DEMO_USER.email), 'result page shows the email');
    assert.ok(expectedGroups.length > 0, 'quickstart puts the demo user in at least one group');
    for (const g of expectedGroups) assert.ok(text.includes(g), `result page shows group ${g}`);
    assert.match(text, /groups/i, 'result page labels the groups claim');
    await page.screenshot({ path: path.join(SCREENSHOTS, 'result.png'), fullPage: true });
    await page.close();
  });

  test('wrong password keeps the user on the login form with an error', async () => {
    await context.clearCookies();
    const page = await context.newPage();
    lastPage = page;
    const { login, password } = await openLoginForm(page);
    await login.fill(DEMO_USER.login);
    await password.fill('definitely-wrong');
    const post = await submit(page, password);
    const o = await outcome(page, DEMO_USER.email, 10_000);
    assert.notEqual(o.kind, 'result', 'a wrong password must not sign in');
    assert.equal(o.kind, 'form', `expected the login form again, got ${await describePage(page, o, post)}`);
    assert.ok([200, 401].includes(post.status), `form POST answered ${post.status}`);
    assert.ok(!new URL(page.url()).searchParams.has('code'), `no code in ${page.url()}`);
    const text = o.body;
    assert.match(text, /invalid|incorrect|wrong|failed|error|not match/i, 'an error message is shown');
    await page.screenshot({ path: path.join(SCREENSHOTS, 'login-error.png'), fullPage: true });
    await page.close();
  });
});
