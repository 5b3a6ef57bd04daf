"""The full authorization-code flow as a benchmark for bench/run.py: a small load generator (python
stdlib only: threads, one keep-alive http.client connection per virtual user) that runs N virtual
users for S seconds, each doing complete flows back to back with its own empty cookie jar per flow:

  GET /auth (PKCE S256, state, nonce) -> the provider's redirects and pages -> its login form, POSTed
  with the user's login and password -> any further POST form (a consent page), where allowed ->
  302/303 to the redirect URI with `code` and the same `state` -> POST /token (authorization_code,
  client_secret_basic, code_verifier) -> 200 with an ID token (whose `nonce` is checked) and a
  refresh token.

A flow that fails at any step (unexpected status, a login form shown again, no code, state or nonce
mismatch, no refresh token, a connection error) counts as a failure, never as a flow. Per-flow latency
is the wall time of the whole flow; CPU-seconds are the server's (`cpu_of`) over the whole run."""
import base64, hashlib, html.parser, http.client, json, re, secrets, threading, time, urllib.parse
from email.utils import parsedate_to_datetime
from datetime import datetime, timezone

DEFAULT_CONCURRENCY = 4


class FlowError(Exception):
    pass


class Jar:
    """A minimal cookie jar for one flow: cookies by (name, path), sent where the path matches,
    removed by an empty value, `Max-Age<=0` or an `Expires` in the past. One host only."""

    def __init__(self):
        self.cookies = {}

    def store(self, set_cookies, request_path):
        for line in set_cookies:
            parts = [p.strip() for p in line.split(";")]
            if "=" not in parts[0]:
                continue
            name, value = parts[0].split("=", 1)
            attrs = {}
            for p in parts[1:]:
                k, _, v = p.partition("=")
                attrs[k.strip().lower()] = v.strip()
            path = attrs.get("path") or request_path.rsplit("/", 1)[0] or "/"
            gone = value == ""
            if "max-age" in attrs:
                try:
                    gone = gone or int(attrs["max-age"]) <= 0
                except ValueError:
                    pass
            elif "expires" in attrs:
                try:
                    gone = gone or parsedate_to_datetime(attrs["expires"]) <= datetime.now(timezone.utc)
                except (TypeError, ValueError):
                    pass
            if gone:
                self.cookies.pop((name, path), None)
            else:
                self.cookies[(name, path)] = value

    def header(self, path):
        def matches(p):
            return path == p or path.startswith(p if p.endswith("/") else p + "/")
        return "; ".join(f"{n}={v}" for (n, p), v in sorted(self.cookies.items(), key=lambda kv: -len(kv[0][1])) if matches(p))


class Forms(html.parser.HTMLParser):
    """POST forms of a page: [{"action": ..., "inputs": [{"name", "type", "value"}]}]."""

    def __init__(self, text):
        super().__init__()
        self.forms, self._cur = [], None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self._cur = {"action": a.get("action") or "", "method": (a.get("method") or "get").lower(), "inputs": []}
            self.forms.append(self._cur)
        elif tag in ("input", "button") and self._cur is not None and a.get("name"):
            self._cur["inputs"].append({"name": a["name"], "type": (a.get("type") or "text").lower(), "value": a.get("value") or ""})

    def handle_endtag(self, tag):
        if tag == "form":
            self._cur = None


class Conn:
    """One keep-alive HTTP/1.1 connection to the provider's origin (reopened after an error or a
    `Connection: close`)."""

    def __init__(self, origin):
        u = urllib.parse.urlsplit(origin)
        self.origin = f"{u.scheme}://{u.netloc}"
        self.c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        self.requests = 0

    def request(self, method, target, body=None, headers=None):
        self.c.request(method, target, body=body, headers=headers or {})
        r = self.c.getresponse()
        data = r.read()
        self.requests += 1
        return r.status, r.getheaders(), data

    def close(self):
        self.c.close()


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def shape(path):
    """A request path with its random segments (ids, uids) replaced, for the trace."""
    return "/".join(":id" if len(s) >= 16 and re.fullmatch(r"[A-Za-z0-9_-]+", s) else s for s in path.split("/"))


class Client:
    """What the relying party registered: id, secret, redirect URI; the user's login and password;
    extra /auth parameters; `consent`: whether a non-login POST form may be submitted as is."""

    def __init__(self, issuer, client_id, secret, redirect_uri, login, password, scope="openid email groups offline_access",
                 extra=None, consent=False):
        self.issuer = issuer if issuer.endswith("/") else issuer + "/"
        self.client_id, self.redirect_uri, self.login, self.password = client_id, redirect_uri, login, password
        self.scope, self.extra, self.consent = scope, extra or {}, consent
        # RFC 6749 2.3.1: client_secret_basic form-encodes the id and secret first.
        self.basic = "Basic " + base64.b64encode(f"{urllib.parse.quote(client_id, safe='')}:{urllib.parse.quote(secret, safe='')}".encode()).decode()
        self.issuer_path = urllib.parse.urlsplit(self.issuer).path


def flow(conn, cl, trace=None):
    """One complete flow on `conn`; raises FlowError unless it ends with a 200 token answer holding
    an ID token with our nonce and a refresh token. `trace`: a list that gets "METHOD /path status"."""
    jar = Jar()
    verifier = b64url(secrets.token_bytes(32))
    state, nonce = b64url(secrets.token_bytes(12)), b64url(secrets.token_bytes(12))
    q = {"client_id": cl.client_id, "redirect_uri": cl.redirect_uri, "response_type": "code", "scope": cl.scope,
         "state": state, "nonce": nonce, "code_challenge": b64url(hashlib.sha256(verifier.encode()).digest()),
         "code_challenge_method": "S256", **cl.extra}
    url = cl.issuer + "auth?" + urllib.parse.urlencode(q)
    method, body, logged_in, callback = "GET", None, False, None

    def send(method, url, body=None, headers=None):
        u = urllib.parse.urlsplit(url)
        if f"{u.scheme}://{u.netloc}" != conn.origin:
            raise FlowError(f"{method} to another origin: {url}")
        target = u.path + ("?" + u.query if u.query else "")
        h = dict(headers or {})
        cookie = jar.header(u.path)
        if cookie:
            h["Cookie"] = cookie
        status, headers_, data = conn.request(method, target, body, h)
        jar.store([v for k, v in headers_ if k.lower() == "set-cookie"], u.path)
        if trace is not None:
            trace.append(f"{method} {shape(u.path)} {status}")
        return status, {k.lower(): v for k, v in headers_}, data

    for _ in range(16):
        headers = {"Accept": "text/html"}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        status, h, data = send(method, url, body, headers)
        if status in (301, 302, 303, 307) and "location" in h:
            nxt = urllib.parse.urljoin(url, h["location"])
            if nxt.split("?", 1)[0] == cl.redirect_uri:
                callback = nxt
                break
            url, method, body = nxt, "GET", None
            continue
        if status != 200:
            raise FlowError(f"{method} {shape(urllib.parse.urlsplit(url).path)} answered {status}")
        forms = [f for f in Forms(data.decode("utf-8", "replace")).forms if f["method"] == "post"]
        login = next((f for f in forms if any(i["type"] == "password" for i in f["inputs"])), None)
        if login:
            if logged_in:
                raise FlowError("the login form came back after the password was sent")
            fields = {i["name"]: i["value"] for i in login["inputs"] if i["type"] == "hidden"}
            text = next((i["name"] for i in login["inputs"] if i["type"] in ("text", "email")), "login")
            pw = next(i["name"] for i in login["inputs"] if i["type"] == "password")
            fields.update({text: cl.login, pw: cl.password})
            logged_in, form = True, login
        elif forms and cl.consent and logged_in:
            form = forms[0]
            fields = {i["name"]: i["value"] for i in form["inputs"] if i["type"] == "hidden"}
        else:
            raise FlowError(f"a page without the expected form at {shape(urllib.parse.urlsplit(url).path)}")
        url, method, body = urllib.parse.urljoin(url, form["action"] or url), "POST", urllib.parse.urlencode(fields)
    if not callback:
        raise FlowError("no redirect to the redirect URI")
    if not logged_in:
        raise FlowError("reached the redirect URI without a login")
    params = urllib.parse.parse_qs(urllib.parse.urlsplit(callback).query)
    if "error" in params:
        raise FlowError(f"redirect URI with error={params['error'][0]}")
    if params.get("state") != [state] or "code" not in params:
        raise FlowError("redirect URI without the code or with another state")
    status, _, data = send("POST", cl.issuer + "token", urllib.parse.urlencode(
        {"grant_type": "authorization_code", "code": params["code"][0], "redirect_uri": cl.redirect_uri, "code_verifier": verifier}),
        {"Content-Type": "application/x-www-form-urlencoded", "Authorization": cl.basic, "Accept": "application/json"})
    if status != 200:
        raise FlowError(f"token answered {status}: {data[:120]!r}")
    t = json.loads(data)
    if not t.get("refresh_token") or not t.get("id_token"):
        raise FlowError("token answer without an ID token or a refresh token")
    claims = json.loads(base64.urlsafe_b64decode(t["id_token"].split(".")[1] + "=="))
    if claims.get("nonce") != nonce or claims.get("aud") not in (cl.client_id, [cl.client_id]):
        raise FlowError("ID token with another nonce or audience")


def pct(sorted_values, p):
    """Nearest-rank percentile of a sorted list (None when empty)."""
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, max(0, -(-p * len(sorted_values) // 100) - 1))]


def run(cl, cpu_of, seconds, concurrency=DEFAULT_CONCURRENCY, max_flows=None):
    """`concurrency` virtual users doing flows back to back until `seconds` have passed (or
    `max_flows` flows were started); flows under way at the deadline are finished and counted.
    Returns rps (= flows per second of wall time), per_cpu_second (flows per CPU-second of
    `cpu_of()`), p50_ms/p99_ms of whole flows, failures and their first messages, requests per flow
    and one successful flow's request trace."""
    lock = threading.Lock()
    lat, errors, started = [], {}, [0]
    conns, trace = [], []
    deadline = time.monotonic() + seconds

    def user():
        conn = Conn(cl.issuer)
        with lock:
            conns.append(conn)
        while time.monotonic() < deadline:
            with lock:
                if max_flows is not None and started[0] >= max_flows:
                    break
                started[0] += 1
                tr = [] if not trace else None
            t0 = time.perf_counter()
            try:
                flow(conn, cl, tr)
            except Exception as e:  # a failed flow: counted, never a flow; a fresh connection
                conn.close()
                with lock:
                    msg = f"{type(e).__name__}: {e}"[:160]
                    errors[msg] = errors.get(msg, 0) + 1
                continue
            dt = time.perf_counter() - t0
            with lock:
                lat.append(dt)
                if tr and not trace:
                    trace.extend(tr)
        conn.close()

    threads = [threading.Thread(target=user, daemon=True) for _ in range(concurrency)]
    cpu0, client0, t0 = cpu_of(), time.process_time(), time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed, cpu, client_cpu = time.monotonic() - t0, cpu_of() - cpu0, time.process_time() - client0
    lat.sort()
    n, failures = len(lat), sum(errors.values())
    requests = sum(c.requests for c in conns)
    return {"flows": n, "failures": failures, "errors": dict(sorted(errors.items(), key=lambda kv: -kv[1])[:5]),
            "seconds": elapsed, "concurrency": concurrency, "rps": n / elapsed if elapsed else None,
            "cpu_seconds": cpu, "per_cpu_second": n / cpu if cpu > 0 else None,
            "p50_ms": pct(lat, 50) * 1000 if n else None, "p99_ms": pct(lat, 99) * 1000 if n else None,
            "client_cpu_seconds": client_cpu, "requests_per_flow": requests / (n + failures) if n + failures else None,
            "trace": trace}


def keygate_client(kg):
    """The harness's Keygate provider (bench/run.py Keygate): client dex-client-app@bench, user jane."""
    return Client(kg.issuer, "dex-client-app@bench", "bench-secret", "https://app.example.com/cb", "jane@example.com", "password")


def oidc_provider_client(op):
    """The oidc-provider peer (bench/peers/oidc_provider.mjs): its development login page takes any
    password, then its consent page is submitted; prompt=consent as for the peer's own login."""
    return Client(op.issuer, op.client_id, op.client_secret, op.redirect_uri, "jane", "password",
                  extra={"prompt": "consent"}, consent=True)
