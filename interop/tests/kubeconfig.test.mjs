// The kubeconfig generator (`<issuer>kubeconfig`) and the `keygate login` exec plugin, end to end
// with real clients: headless Chromium signs in and gets the page for cluster `prod`, real kubectl
// uses what the page hands out (the kubectl commands, the downloaded `auth-provider: oidc`
// kubeconfig, the exec kubeconfig running `keygate login --device`) against the HTTPS test API
// server of lib/kube.mjs, which verifies every ID token on its own (JWKS signature, iss,
// aud ∋ kubernetes, email, groups).
//
// One keygate serves both tests with `idTokenTTL: 20s`: the exec plugin's tokens must expire
// within the test (the binary runs on the system clock, which cannot be moved).
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { chromium } from 'playwright-core';
import YAML from 'yaml';
import {
  INTEROP_DIR,
  JANE,
  REPO_DIR,
  approveDevice,
  cleanupDir,
  decodeJwtPayload,
  freePort,
  hashPassword,
  keygateAvailable,
  keygateBin,
  keygateMetrics,
  makeTempDir,
  run,
  standardConfig,
  startKeygate,
} from '../lib/keygate.mjs';
import { expiredIdToken, findKubectl, kubectlRunner, makeCerts, startApiServer, startInTerminal } from '../lib/kube.mjs';

const KUBECTL = findKubectl();
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const SCREENSHOTS = path.join(INTEROP_DIR, 'screenshots');
// The screenshot in docs/ is only rewritten on request (it would change on every run: ports, times).
const DOCS_SCREENSHOT = process.env.KEYGATE_DOCS_SCREENSHOTS ? path.join(REPO_DIR, 'docs', 'kubeconfig-page.png') : null;
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
const CLUSTER = { id: 'prod', description: 'Production' };
const ID_TOKEN_TTL = 20; // seconds; see the exec plugin test for why not less
const EXPIRY_MARGIN = 10; // keygate login refreshes a cached ID token this many seconds before exp
const PARALLEL = 8;
const NO_JS_TEST = 'without JavaScript the copy buttons stay hidden';
const sleep = (ms) => new Promise((r) => setTimeout(r, Math.max(0, ms)));

const available = await keygateAvailable();
const hasScript = await run('script', ['--version'], { timeoutMs: 10_000 }).then((r) => r.code === 0, () => false);
const skip = !available
  ? 'keygate binary missing (build it or set KEYGATE_BIN)'
  : !KUBECTL
    ? 'kubectl not found (set KUBECTL)'
    : !existsSync(CHROMIUM)
      ? `${CHROMIUM} is absent: install it with \`apt-get install -y --no-install-recommends chromium\` (or set CHROMIUM_BIN)`
      : !hasScript
        ? 'util-linux `script` is missing (it gives kubectl a terminal)'
        : false;
if (skip) console.log(`# kubeconfig test skipped: ${skip}`);

describe('kubeconfig generator page and keygate login with real kubectl', { skip }, () => {
  let dir;
  let kg;
  let api;
  let kc; // kubectl runner (HOME and kubectl's cache in `dir`)
  let browser;
  let context;
  let page;
  let bg; // kubectl in a terminal, in the background
  let parallelRuns = [];
  const shared = {}; // from the page test to the exec plugin test

  before(async () => {
    dir = await makeTempDir('keygate-kubeconfig-');
    mkdirSync(SCREENSHOTS, { recursive: true });
    const certs = await makeCerts(dir);
    // keygate's config names the API server, so its port is chosen before either starts.
    const apiPort = await freePort();
    const cluster = [
      '  kubeconfigGenerator:',
      `  - id: ${CLUSTER.id}`,
      `    masterURI: https://127.0.0.1:${apiPort}`,
      `    masterCA: ${JSON.stringify(readFileSync(certs.ca, 'utf8'))}`,
      `    description: ${CLUSTER.description}`,
    ].join('\n');
    const passwordHash = await hashPassword(JANE.password);
    kg = await startKeygate({
      configYaml: (o) => standardConfig({ ...o, passwordHash, idTokenTTL: `${ID_TOKEN_TTL}s`, extraSpec: cluster }),
    });
    api = await startApiServer({ issuer: kg.issuer, certs, port: apiPort });
    kc = kubectlRunner({ kubectlBin: KUBECTL, dir });
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  });

  after(async () => {
    await bg?.stop();
    await context?.close().catch(() => {});
    await browser?.close().catch(() => {});
    await api?.close();
    await kg?.stop();
    await cleanupDir(kg?.dir);
    await cleanupDir(dir);
  });

  afterEach(async (t) => {
    if (t.passed !== false || t.name === NO_JS_TEST) return;
    if (page && !page.isClosed()) {
      const file = path.join(SCREENSHOTS, `failure-kubeconfig-${t.name.replace(/[^a-z0-9]+/gi, '-').slice(0, 60)}.png`);
      await page.screenshot({ path: file, fullPage: true }).catch(() => {});
      const html = await page.content().catch(() => '');
      process.stderr.write(`\n----- page at failure: ${page.url()} (screenshot ${file}) -----\n${html.slice(0, 6000)}\n`);
    }
    if (bg) process.stderr.write(`\n----- background kubectl (${bg.command}) -----\n${bg.output()}\n`);
    for (const [i, r] of parallelRuns.entries()) {
      if (r.code !== 0) process.stderr.write(`\n----- parallel kubectl #${i + 1} (exit ${r.code}) -----\n${r.stderr.slice(-4000)}\n`);
    }
    if (kc?.last) process.stderr.write(`\n${kc.describeLast(api)}`);
    kg?.dumpLog(`after failed test "${t.name}"`);
  });

  /** What the API server saw since `from` (an index into api.seen). */
  const seenSince = (from) => api.seen.slice(from);
  const describeSeen = (list) => JSON.stringify(list.map(({ token, claims, ...r }) => ({ ...r, azp: claims?.azp })));
  const refreshGrants = (m) => m.keygate_refresh_rotations_total + m.keygate_refresh_reused_total;

  /** The user entry of a kubeconfig file as written (kubectl rewrites it on refresh). */
  function kubeconfigUser(file) {
    const cfg = YAML.parse(readFileSync(file, 'utf8'));
    assert.equal(cfg.users?.length, 1, `one user in ${file}`);
    return cfg.users[0];
  }

  test('Chromium signs in at <issuer>kubeconfig; kubectl uses the commands and the download, and refreshes', async (t) => {
    const t0 = Date.now();
    const mark = (what) => t.diagnostic(`${what} at +${((Date.now() - t0) / 1000).toFixed(1)} s`);
    page = await context.newPage();
    const pageUrl = new URL(`kubeconfig/${CLUSTER.id}`, kg.issuer).href;

    // --- sign in through the form
    await page.goto(new URL('kubeconfig', kg.issuer).href, { waitUntil: 'load' });
    const login = page.locator('input[name="login"]');
    await login.waitFor({ state: 'visible', timeout: 10_000 });
    assert.ok(page.url().startsWith(new URL('auth', kg.issuer).href), `the sign-in runs on keygate's login form: ${page.url()}`);
    await login.fill(JANE.login);
    await page.locator('input[name="password"]').fill(JANE.password);
    await Promise.all([
      page.waitForURL(pageUrl, { timeout: 15_000 }),
      page.locator('form button[type="submit"], form input[type="submit"]').first().click(),
    ]);
    mark('signed in, cluster page shown');

    // --- the page for cluster prod
    await assert.doesNotReject(page.getByRole('heading', { name: `Access to ${CLUSTER.description}` }).waitFor({ timeout: 5_000 }));
    const body = await page.locator('body').innerText();
    assert.ok(body.includes(JANE.email), 'the page names the user');
    assert.ok(body.includes(api.url), 'the page names the API server');
    const commands = await page.locator('#kg-commands').textContent();
    assert.match(commands, new RegExp(`kubectl config set-cluster '${CLUSTER.id}' --server='${api.url}'`));
    assert.match(commands, /--certificate-authority=prod-ca\.crt --embed-certs=true/);
    assert.match(commands, /kubectl config set-credentials '[^']+' --auth-provider=oidc/);
    assert.match(commands, /--auth-provider-arg=client-id=kubeconfig-generator/);
    assert.match(commands, /kubectl config use-context 'prod'/);
    shared.commands = commands;
    const shownKubeconfig = await page.locator('#kg-kubeconfig').textContent();
    const shown = YAML.parse(shownKubeconfig);
    assert.equal(shown.users[0].user['auth-provider'].config['client-id'], 'kubeconfig-generator');
    assert.equal(shown.users[0].user['auth-provider'].config['client-secret'], undefined, 'a public client: no secret');
    for (const id of ['kg-commands', 'kg-kubeconfig']) {
      assert.ok(await page.locator(`button.kg-copy[data-copy="${id}"]`).isVisible(), `the copy button for #${id} is visible with JS`);
    }
    const idTokenOnPage = (await page.locator('#kg-id-token').inputValue()).trim();
    const pageClaims = decodeJwtPayload(idTokenOnPage);
    assert.ok([].concat(pageClaims.aud).includes('kubernetes'), `aud ${JSON.stringify(pageClaims.aud)}`);
    assert.equal(pageClaims.azp, 'kubeconfig-generator');
    const execKubeconfig = YAML.parse(await page.locator('#kg-exec').textContent());
    shared.execKubeconfig = execKubeconfig;
    assert.deepEqual(execKubeconfig.users[0].user.exec.args, ['login', '--issuer', kg.issuer, '--client-id', 'keygate-login']);
    assert.equal(execKubeconfig.users[0].user.exec.command, 'keygate');
    assert.equal(execKubeconfig.users[0].user.exec.apiVersion, 'client.authentication.k8s.io/v1');
    assert.equal(execKubeconfig.clusters[0].cluster.server, api.url);

    // The whole page in one viewport: the page background is `fixed`, and a full-page capture of a
    // shorter viewport would cut its gradient off at the viewport's height.
    const height = await page.evaluate(() => document.documentElement.scrollHeight);
    await page.setViewportSize({ width: 1280, height });
    await page.screenshot({ path: path.join(SCREENSHOTS, 'kubeconfig-page.png') });
    if (DOCS_SCREENSHOT) await page.screenshot({ path: DOCS_SCREENSHOT });
    await page.setViewportSize({ width: 1280, height: 900 });

    // --- download the kubeconfig through the page's link
    const [download] = await Promise.all([
      page.waitForEvent('download', { timeout: 10_000 }),
      page.getByRole('link', { name: 'Download kubeconfig' }).click(),
    ]);
    assert.equal(download.url(), new URL(`kubeconfig/${CLUSTER.id}/kubeconfig.yaml`, kg.issuer).href);
    assert.equal(download.suggestedFilename(), `kubeconfig-${CLUSTER.id}.yaml`);
    const kubeconfig = path.join(dir, 'downloaded-kubeconfig.yaml');
    await download.saveAs(kubeconfig);
    mark('kubeconfig downloaded');
    const viaRequest = await page.context().request.get(download.url());
    assert.equal(viaRequest.status(), 200);
    assert.equal(viaRequest.headers()['cache-control'], 'no-store');
    assert.equal(await viaRequest.text(), readFileSync(kubeconfig, 'utf8'), 'the download is the kubeconfig of the session');
    assert.equal(readFileSync(kubeconfig, 'utf8'), shownKubeconfig, 'and the one shown on the page');
    const anonymous = await fetch(download.url());
    assert.equal(anonymous.status, 401, 'without the page cookie there is no kubeconfig');
    await anonymous.arrayBuffer();

    const cfg = YAML.parse(readFileSync(kubeconfig, 'utf8'));
    assert.equal(cfg['current-context'], CLUSTER.id);
    assert.equal(cfg.clusters[0].cluster.server, api.url);
    assert.equal(
      Buffer.from(cfg.clusters[0].cluster['certificate-authority-data'], 'base64').toString().trim(),
      readFileSync(api.ca, 'utf8').trim(),
      'the masterCA is embedded',
    );
    const user = cfg.users[0];
    assert.equal(user.name, `${JANE.email}@${CLUSTER.id}`);
    const ap = user.user['auth-provider'];
    assert.equal(ap.name, 'oidc');
    assert.equal(ap.config['idp-issuer-url'], kg.issuer);
    assert.equal(ap.config['id-token'], idTokenOnPage);
    assert.ok(ap.config['refresh-token'], 'a refresh token (offline_access)');

    // --- kubectl with the download, as is. The ID token was minted moments ago (TTL 20 s); kubectl
    // refreshes only 10 s before exp, so unless this machine took >8 s since the sign-in, it sends it as is.
    const freshEnough = pageClaims.exp - Date.now() / 1000 > EXPIRY_MARGIN + 2;
    let from = api.seen.length;
    const r1 = await kc.kubectl(kubeconfig, 'get', '--raw', '/api/v1/namespaces');
    assert.equal(r1.code, 0, `kubectl with the downloaded kubeconfig (stderr: ${r1.stderr.slice(-3000)})`);
    assert.equal(JSON.parse(r1.stdout).kind, 'NamespaceList');
    let seen = seenSince(from);
    assert.ok(seen.length > 0 && seen.every((e) => e.auth === 'valid'), `API server: ${describeSeen(seen)}`);
    assert.ok([].concat(seen.at(-1).claims.aud).includes('kubernetes'));
    assert.ok(seen.at(-1).claims.groups.includes('devs'));
    if (freshEnough) {
      assert.equal(seen.at(-1).token, idTokenOnPage, 'kubectl sent the downloaded ID token');
      assert.doesNotMatch(r1.stderr, /POST \S+\/token\b/, 'no refresh while the ID token is fresh');
    } else {
      t.diagnostic('the downloaded ID token was within 10 s of exp already: kubectl refreshed on its first run');
    }
    mark('kubectl ran with the downloaded kubeconfig');

    // --- the kubectl commands from the page, run as shown, build a working kubeconfig too
    const cmdDir = path.join(dir, 'commands');
    mkdirSync(path.join(cmdDir, 'bin'), { recursive: true });
    symlinkSync(KUBECTL, path.join(cmdDir, 'bin', 'kubectl'));
    const built = path.join(cmdDir, 'kubeconfig');
    const sh = await run('sh', ['-e'], {
      input: commands,
      cwd: cmdDir,
      env: { PATH: `${path.join(cmdDir, 'bin')}:${process.env.PATH}`, HOME: cmdDir, KUBECONFIG: built, LANG: 'C' },
    });
    assert.equal(sh.code, 0, `the page's commands ran (stdout: ${sh.stdout} stderr: ${sh.stderr})`);
    from = api.seen.length;
    const r2 = await kc.kubectl(built, 'get', '--raw', '/api/v1/namespaces');
    assert.equal(r2.code, 0, `kubectl with the kubeconfig from the commands (stderr: ${r2.stderr.slice(-3000)})`);
    seen = seenSince(from);
    assert.ok(seen.length > 0 && seen.every((e) => e.auth === 'valid'), `API server: ${describeSeen(seen)}`);
    mark('kubectl ran with the kubeconfig the commands built');

    // --- the ID token expires: put an expired one into the downloaded kubeconfig (instead of waiting
    // ~10 s). kubectl must refresh with the page's refresh token (public client, no secret),
    // rewrite the file and go on with the new token.
    const before = kubeconfigUser(kubeconfig).user['auth-provider'].config;
    const doc = YAML.parseDocument(readFileSync(kubeconfig, 'utf8'));
    doc.setIn(['users', 0, 'user', 'auth-provider', 'config', 'id-token'], expiredIdToken(kg.issuer));
    writeFileSync(kubeconfig, doc.toString(), { mode: 0o600 });
    from = api.seen.length;
    const r3 = await kc.kubectl(kubeconfig, 'get', '--raw', '/api/v1/namespaces');
    assert.equal(r3.code, 0, `kubectl after the ID token expired (stderr: ${r3.stderr.slice(-3000)})`);
    assert.equal(JSON.parse(r3.stdout).kind, 'NamespaceList');
    assert.match(r3.stderr, /POST \S+\/token 200\b/, 'kubectl refreshed through /token');
    const refreshed = kubeconfigUser(kubeconfig).user['auth-provider'].config;
    assert.notEqual(refreshed['id-token'], before['id-token'], 'the kubeconfig has a new id-token');
    assert.notEqual(refreshed['id-token'], idTokenOnPage);
    assert.ok(refreshed['refresh-token'], 'and a refresh token');
    seen = seenSince(from);
    assert.ok(seen.length > 0 && seen.every((e) => e.auth === 'valid'), `API server: ${describeSeen(seen)}`);
    assert.equal(seen.at(-1).token, refreshed['id-token'], 'the API server got the new id-token');
    const c = seen.at(-1).claims;
    assert.equal(c.azp, 'kubeconfig-generator');
    assert.ok([].concat(c.aud).includes('kubernetes'), `aud ${JSON.stringify(c.aud)}`);
    assert.ok(c.exp > Date.now() / 1000, 'a fresh token');
    t.diagnostic(`kubectl's token requests: ${JSON.stringify(r3.stderr.match(/POST \S+\/token \d+[^\n]*/g))}`);
    mark('kubectl refreshed');
    await page.close();
  });

  // Progressive enhancement: copy.js unhides the copy buttons when it can copy. Without JS (or
  // without navigator.clipboard, i.e. outside a secure context) they must stay hidden.
  test(
    NO_JS_TEST,
    async () => {
      assert.ok(shared.commands, 'the page test ran');
      const noJs = await browser.newContext({ viewport: { width: 1280, height: 900 }, javaScriptEnabled: false });
      try {
        await noJs.addCookies(await context.cookies());
        const plain = await noJs.newPage();
        await plain.goto(new URL(`kubeconfig/${CLUSTER.id}`, kg.issuer).href, { waitUntil: 'load' });
        assert.equal(await plain.locator('#kg-commands').textContent(), shared.commands, 'the same page without JS');
        const button = plain.locator('button.kg-copy[data-copy="kg-commands"]');
        assert.equal(await button.getAttribute('hidden'), '', 'the button carries `hidden`');
        const display = await button.evaluate((b) => getComputedStyle(b).display);
        assert.equal(await button.isVisible(), false, `no copy button without JS (computed display: ${display})`);
      } finally {
        await noJs.close();
      }
    },
  );

  test('kubectl with the exec kubeconfig: keygate login --device, then 8 parallel kubectl calls refresh once', async (t) => {
    assert.ok(shared.execKubeconfig, 'the page test handed over the exec kubeconfig');
    const t0 = Date.now();
    const mark = (what) => t.diagnostic(`${what} at +${((Date.now() - t0) / 1000).toFixed(1)} s`);
    const cacheDir = path.join(dir, 'keygate-login-cache');
    const cfg = structuredClone(shared.execKubeconfig);
    const exec = cfg.users[0].user.exec;
    exec.command = path.resolve(keygateBin());
    exec.args.push('--device', '--cache-dir', cacheDir);
    const kubeconfig = path.join(dir, 'exec-kubeconfig.yaml');
    writeFileSync(kubeconfig, YAML.stringify(cfg), { mode: 0o600 });
    const env = { PATH: process.env.PATH, HOME: dir, LANG: 'C' };
    const kubectlArgs = (...args) => ['--kubeconfig', kubeconfig, '--request-timeout', '20s', ...args];

    // kubectl without a terminal: kubectl says `interactive: false`, and keygate login without
    // --device will not start a browser sign-in nobody can see (it says how to go on instead).
    let from = api.seen.length;
    const browserCfg = structuredClone(shared.execKubeconfig);
    browserCfg.users[0].user.exec.command = path.resolve(keygateBin());
    browserCfg.users[0].user.exec.args.push('--cache-dir', cacheDir);
    const browserKubeconfig = path.join(dir, 'exec-browser-kubeconfig.yaml');
    writeFileSync(browserKubeconfig, YAML.stringify(browserCfg), { mode: 0o600 });
    const quiet = await kc.kubectl(browserKubeconfig, 'get', '--raw', '/api/v1/namespaces');
    assert.notEqual(quiet.code, 0, 'no sign-in without a terminal');
    assert.match(quiet.stderr, /not logged in, and kubectl runs without a terminal/);
    assert.ok(seenSince(from).every((e) => e.auth !== 'valid'));

    // --- first run in a terminal: the device flow
    from = api.seen.length;
    const stdoutFile = path.join(dir, 'exec-first-run.out');
    bg = startInTerminal(KUBECTL, kubectlArgs('get', '--raw', '/api/v1/namespaces'), { env, stdoutFile });
    const m = await bg.waitFor(/keygate login: to sign in, open (\S+) and enter the code ([A-Z]{4}-[A-Z]{4})/, 30_000);
    mark(`device code ${m[2]} shown`);
    assert.equal(m[1], new URL('device', kg.issuer).href);
    // Typed the way people do: lower case, no dash.
    const approval = await approveDevice(kg.issuer, m[2].toLowerCase().replace('-', ''));
    assert.equal(approval.status, 200, `device callback: ${approval.trace.join('\n')}\n${approval.body.slice(0, 2000)}`);
    assert.match(approval.body, /Your device is signed in/);
    mark('approved');
    // keygate login polls every 5 s.
    const first = await Promise.race([bg.exited, sleep(30_000).then(() => ({ timedOut: '30 s after the approval' }))]);
    mark('first kubectl run done');
    assert.equal(first.code, 0, `kubectl in the terminal exited ${JSON.stringify(first)}:\n${bg.output()}`);
    assert.equal(JSON.parse(readFileSync(stdoutFile, 'utf8')).kind, 'NamespaceList');
    let seen = seenSince(from);
    assert.ok(seen.length > 0 && seen.every((e) => e.auth === 'valid'), `API server: ${describeSeen(seen)}`);
    const deviceToken = seen.at(-1).token;
    const claims = seen.at(-1).claims;
    assert.equal(claims.azp, 'keygate-login');
    assert.ok([].concat(claims.aud).includes('kubernetes'), `aud ${JSON.stringify(claims.aud)}`);
    assert.equal(claims.email, JANE.email);
    bg = null;

    // The token cache: one 0600 JSON file (with the refresh token) and its lock file.
    const files = readdirSync(cacheDir).sort();
    const json = files.filter((f) => f.endsWith('.json'));
    assert.equal(json.length, 1, `cache dir: ${files}`);
    assert.ok(files.includes(json[0].replace(/\.json$/, '.lock')), `cache dir: ${files}`);
    const cacheFile = path.join(cacheDir, json[0]);
    assert.equal(statSync(cacheFile).mode & 0o777, 0o600);
    const cached = JSON.parse(readFileSync(cacheFile, 'utf8'));
    assert.equal(cached.id_token, deviceToken);
    assert.ok(cached.refresh_token, 'the cache keeps a refresh token');

    // --- the ID token expires. keygate login refreshes once the cached token is within 10 s of
    // exp; with idTokenTTL 20 s that is about 10 s after the approval minted it. The binary runs on
    // the system clock, so the test waits for real. (A shorter TTL would leave the refreshed token
    // fresh for less than TTL - 10 s, and all 8 parallel calls below must find it still fresh in the
    // cache, or they would refresh again.)
    const metricsBefore = await keygateMetrics(kg.issuer);
    for (const k of ['keygate_refresh_rotations_total', 'keygate_refresh_reused_total']) {
      assert.ok(k in metricsBefore, `/metrics exposes ${k}: ${JSON.stringify(metricsBefore)}`);
    }
    const refreshAt = (claims.exp - EXPIRY_MARGIN) * 1000 + 100;
    t.diagnostic(`waiting ${((refreshAt - Date.now()) / 1000).toFixed(1)} s for the ID token to come within ${EXPIRY_MARGIN} s of exp`);
    await sleep(refreshAt - Date.now());
    mark('token due for refresh');

    from = api.seen.length;
    parallelRuns = await Promise.all(
      Array.from({ length: PARALLEL }, () => run(KUBECTL, kubectlArgs('get', '--raw', '/api/v1/namespaces'), { env, timeoutMs: 60_000 })),
    );
    mark(`${PARALLEL} parallel kubectl runs done`);
    const failed = parallelRuns.map((r, i) => [i + 1, r]).filter(([, r]) => r.code !== 0);
    assert.deepEqual(
      failed.map(([i, r]) => `#${i} exit ${r.code}: ${r.stderr.slice(-1500)}`),
      [],
      'every parallel kubectl run succeeds',
    );
    for (const r of parallelRuns) assert.equal(JSON.parse(r.stdout).kind, 'NamespaceList');
    seen = seenSince(from);
    assert.ok(seen.length >= PARALLEL && seen.every((e) => e.auth === 'valid'), `API server: ${describeSeen(seen)}`);
    const tokens = new Set(seen.map((e) => e.token));
    assert.equal(tokens.size, 1, `all ${PARALLEL} kubectl calls sent the same (refreshed) token, saw ${tokens.size}`);
    const [newToken] = tokens;
    assert.notEqual(newToken, deviceToken, 'a new ID token');
    assert.ok(decodeJwtPayload(newToken).exp > claims.exp);
    assert.equal(JSON.parse(readFileSync(cacheFile, 'utf8')).id_token, newToken, 'the cache holds the new token');

    const metricsAfter = await keygateMetrics(kg.issuer);
    const grants = refreshGrants(metricsAfter) - refreshGrants(metricsBefore);
    t.diagnostic(
      `refresh grants: rotations +${metricsAfter.keygate_refresh_rotations_total - metricsBefore.keygate_refresh_rotations_total}, ` +
        `reused +${metricsAfter.keygate_refresh_reused_total - metricsBefore.keygate_refresh_reused_total}`,
    );
    assert.equal(grants, 1, `${PARALLEL} parallel kubectl calls made exactly one refresh grant`);
  });
});
