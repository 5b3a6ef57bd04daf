// A transparent HTTP proxy in front of keygate that can hold token-endpoint
// requests at a barrier and let them through all at once. Real clients start
// at different speeds (kubectl is a process, openid-client a function call), so
// "at the same time" only means something if their /token requests are made to
// reach keygate together: the gate waits until N of them are in, then forwards
// them in the same instant.
//
// Clients must send their token requests to the gate:
//  - kubectl: `idp-issuer-url: <gate.issuer>`; the gate serves keygate's
//    discovery document with `token_endpoint` pointing at itself (kubectl only
//    reads token_endpoint from it and never checks the ID token's `iss`);
//  - openid-client: a Configuration whose server metadata has
//    `token_endpoint: gate.tokenEndpoint` (issuer and jwks_uri stay keygate's).
// Everything else is forwarded unchanged.
import http from 'node:http';
import { freePort } from './keygate.mjs';

const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'transfer-encoding',
  'content-length',
  'content-encoding',
  'host',
  'accept-encoding',
  'upgrade',
  'proxy-connection',
]);

/** Which client sent a request, from its User-Agent (openid-client/x.y.z vs Go's net/http in kubectl). */
export function clientOf(userAgent = '') {
  if (/^openid-client\//.test(userAgent)) return 'openid-client';
  if (/^(Go-http-client|kubectl)/.test(userAgent)) return 'kubectl';
  return userAgent || 'unknown';
}

/**
 * Start the gate for `issuer` (keygate's). Returns
 * {issuer, tokenEndpoint, requests, hold({count, timeoutMs, alignToSecond}), trace(), close()}.
 *
 * `requests` lists every token request: {n, client, userAgent, grantType,
 * presented (the refresh_token sent), arrivedAt, forwardedAt, respondedAt,
 * status, body, json, held}.
 */
export async function startTokenGate({ issuer }) {
  const upstream = new URL(issuer);
  const meta = await (await fetch(new URL('.well-known/openid-configuration', issuer))).json();
  const tokenPath = new URL(meta.token_endpoint).pathname;
  const discoveryPath = new URL('.well-known/openid-configuration', issuer).pathname;
  const port = await freePort();
  const origin = `http://127.0.0.1:${port}`;
  const gateIssuer = new URL(upstream.pathname, origin).href;
  const requests = [];
  let batch = null;

  const server = http.createServer(async (req, res) => {
    try {
      const chunks = [];
      for await (const c of req) chunks.push(c);
      const body = Buffer.concat(chunks);
      const target = new URL(req.url, upstream);
      let entry = null;
      if (req.method === 'POST' && target.pathname === tokenPath) {
        const form = new URLSearchParams(body.toString('utf8'));
        entry = {
          n: requests.length + 1,
          client: clientOf(req.headers['user-agent']),
          userAgent: req.headers['user-agent'] ?? '',
          grantType: form.get('grant_type'),
          presented: form.get('refresh_token'),
          arrivedAt: Date.now(),
          held: false,
        };
        requests.push(entry);
        if (batch && !batch.closed) {
          const b = batch;
          entry.held = true;
          b.entries.push(entry);
          if (b.entries.length >= b.count) b.fill();
          await b.gate;
        }
        entry.forwardedAt = Date.now();
      }
      const headers = {};
      for (const [k, v] of Object.entries(req.headers)) if (!HOP_BY_HOP.has(k)) headers[k] = v;
      const up = await fetch(target, {
        method: req.method,
        headers,
        body: ['GET', 'HEAD'].includes(req.method) ? undefined : body,
        redirect: 'manual',
      });
      let out = Buffer.from(await up.arrayBuffer());
      if (req.method === 'GET' && target.pathname === discoveryPath && up.status === 200) {
        const doc = JSON.parse(out.toString('utf8'));
        doc.token_endpoint = new URL(tokenPath, origin).href;
        out = Buffer.from(JSON.stringify(doc));
      }
      const outHeaders = {};
      for (const [k, v] of up.headers) if (!HOP_BY_HOP.has(k) && k !== 'set-cookie') outHeaders[k] = v;
      const cookies = up.headers.getSetCookie?.() ?? [];
      if (cookies.length) outHeaders['set-cookie'] = cookies;
      outHeaders['content-length'] = String(out.length);
      if (entry) {
        entry.respondedAt = Date.now();
        entry.status = up.status;
        entry.body = out.toString('utf8');
        try {
          entry.json = JSON.parse(entry.body);
        } catch {
          entry.json = null;
        }
      }
      res.writeHead(up.status, outHeaders);
      res.end(out);
    } catch (err) {
      res.writeHead(502, { 'content-type': 'text/plain' });
      res.end(`token gate: ${err?.stack ?? err}`);
    }
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });

  /**
   * Hold the next `count` token requests, then forward them together. With
   * alignToSecond, the release waits for the start of the next wall-clock
   * second (keygate's clock has one-second resolution: a rotation at x.02
   * keeps its reuse window open for almost the whole interval, one at x.98 for
   * one second less). After `timeoutMs` whatever arrived goes through anyway
   * (`timedOut`). Returns the batch: {count, entries, released (a promise of
   * {releasedAt, timedOut}), releasedAt, timedOut}.
   */
  function hold({ count, timeoutMs = 30_000, alignToSecond = false }) {
    if (batch && !batch.closed) throw new Error('token gate: a batch is already being held');
    let open;
    const b = {
      count,
      entries: [],
      closed: false,
      timedOut: false,
      releasedAt: null,
      gate: new Promise((r) => (open = r)),
    };
    const release = (timedOut) => {
      if (b.releasedAt) return;
      clearTimeout(timer);
      b.timedOut = timedOut;
      b.releasedAt = Date.now();
      open();
    };
    b.fill = () => {
      b.closed = true;
      b.filledAt = Date.now();
      const wait = alignToSecond ? 1000 - (b.filledAt % 1000) + 20 : 0;
      setTimeout(() => release(false), wait);
    };
    const timer = setTimeout(() => {
      b.closed = true;
      release(true);
    }, timeoutMs);
    b.released = b.gate.then(() => ({ releasedAt: b.releasedAt, timedOut: b.timedOut }));
    batch = b;
    return b;
  }

  /** The token requests so far, one line each (refresh tokens shortened). */
  function trace(list = requests) {
    const short = (t) => (t ? `${t.slice(0, 10)}…${t.slice(-6)}` : '-');
    return list
      .map(
        (e) =>
          `#${e.n} ${e.client} ${e.grantType} presented=${short(e.presented)} held=${e.held} ` +
          `arrived=${new Date(e.arrivedAt).toISOString()} forwarded=${e.forwardedAt ? new Date(e.forwardedAt).toISOString() : '-'} ` +
          `-> ${e.status ?? 'pending'} ${e.json?.refresh_token ? 'refresh_token=' + short(e.json.refresh_token) : (e.body ?? '').slice(0, 300)}`,
      )
      .join('\n');
  }

  return {
    issuer: gateIssuer,
    tokenEndpoint: new URL(tokenPath, origin).href,
    requests,
    hold,
    trace,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}
