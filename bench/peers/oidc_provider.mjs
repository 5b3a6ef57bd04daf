// Benchmark peer: oidc-provider 9 (npm, OpenID-certified) in this process, started by bench/run.py.
// Reuses interop/lib/upstream-idp.mjs (its development login and consent pages) and loginViaForm.
//
//   node bench/peers/oidc_provider.mjs <port>
//
// Listens on 127.0.0.1:<port> with an RS256 key, refresh-token rotation OFF (so one refresh token
// can be replayed, like Keygate's reuse window), logs in once through the login + consent pages
// with scope `openid offline_access` and prompt=consent (PKCE S256), exchanges the code, then prints
// one JSON line {issuer, refresh_token, authorization, client_id, client_secret, redirect_uri} on
// stdout and keeps serving until killed. bench/codeflow.py then drives whole code flows through the
// same pages (login of account `jane`, any password: the development login page checks none; consent).
import { createHash, randomBytes } from 'node:crypto';
import { startUpstream, signingJwk } from '../../interop/lib/upstream-idp.mjs';
import { loginViaForm } from '../../interop/lib/keygate.mjs';

const port = Number(process.argv[2]);
const client = { id: 'bench', secret: 'bench-secret', redirectUris: ['https://app.example.com/cb'] };
const jwk = await signingJwk({ alg: 'RS256' });
const up = await startUpstream({
  port,
  client,
  jwk,
  accounts: { jane: { email: 'jane@example.com', email_verified: true } },
  rotateRefreshToken: false,
});
const b64url = (b) => b.toString('base64').replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
const verifier = b64url(randomBytes(32));
const auth = new URL(`${up.issuer}/auth`);
for (const [k, v] of Object.entries({
  client_id: client.id,
  redirect_uri: client.redirectUris[0],
  response_type: 'code',
  scope: 'openid email offline_access',
  prompt: 'consent',
  state: 'bench-state',
  nonce: 'bench-nonce',
  code_challenge: b64url(createHash('sha256').update(verifier).digest()),
  code_challenge_method: 'S256',
})) auth.searchParams.set(k, v);
const callback = new URL(await loginViaForm(auth.href, 'jane', 'any'));
const code = callback.searchParams.get('code');
if (!code) throw new Error(`no code: ${callback}`);
const authorization = 'Basic ' + Buffer.from(`${client.id}:${client.secret}`).toString('base64');
const res = await fetch(`${up.issuer}/token`, {
  method: 'POST',
  headers: { 'content-type': 'application/x-www-form-urlencoded', authorization },
  body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: client.redirectUris[0], code_verifier: verifier }),
});
const tokens = await res.json();
if (!tokens.refresh_token) throw new Error(`no refresh token: ${res.status} ${JSON.stringify(tokens)}`);
// One refresh to check the token replays (rotation off).
for (let i = 0; i < 2; i++) {
  const r = await fetch(`${up.issuer}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization },
    body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: tokens.refresh_token }),
  });
  const t = await r.json();
  if (r.status !== 200 || !t.id_token) throw new Error(`refresh ${i} failed: ${r.status} ${JSON.stringify(t)}`);
}
// The benchmark's requests are not to be kept: upstream-idp.mjs records every request and grant event.
up.requests.push = () => 0;
up.events.push = () => 0;
process.stdout.write(JSON.stringify({
  issuer: `${up.issuer}/`,
  refresh_token: tokens.refresh_token,
  authorization,
  client_id: client.id,
  client_secret: client.secret,
  redirect_uri: client.redirectUris[0],
}) + '\n');
process.on('SIGTERM', () => process.exit(0));
