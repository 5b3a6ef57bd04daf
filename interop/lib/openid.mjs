// openid-client helpers shared by the tests that drive it.

/**
 * openid-client errors hide the interesting part (the HTTP response) in .cause:
 * await `promise` and, if it rejects, rethrow with status, OAuth error and the
 * response body folded into the message.
 */
export async function explained(promise) {
  try {
    return await promise;
  } catch (err) {
    const fmt = async (c, depth = 0) => {
      if (c === undefined || depth > 3) return '-';
      if (c instanceof Response) return `HTTP ${c.status} ${await c.text().catch(() => '')}`;
      if (c instanceof Error) return `${c.name}: ${c.message} (cause: ${await fmt(c.cause, depth + 1)})`;
      try {
        return JSON.stringify(c, (k, v) => (ArrayBuffer.isView(v) ? `<${v.length} bytes>` : v)).slice(0, 800);
      } catch {
        return String(c);
      }
    };
    const cause = await fmt(err.cause);
    err.message = `${err.message} [code=${err.code} error=${err.error ?? '-'} status=${err.status ?? '-'} cause=${cause}]`;
    throw err;
  }
}

/** The OAuth `error` code carried by an openid-client error, if any. */
export function oauthErrorCode(err) {
  return err?.error ?? err?.cause?.error ?? [].concat(err?.cause ?? []).map((c) => c?.parameters?.error).find(Boolean);
}
