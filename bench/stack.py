"""Peers and the authenticator stack for bench/run.py: oidc-provider (node), Redis, nginx,
Apache httpd + mod_auth_openidc and `keygate authenticator`, plus the storage-size figures (Redis per 100k sessions, SQLite per 100k
refresh-token families). Every server is started here on 127.0.0.1 and a free port, stopped by PID."""
import json, os, secrets, signal, shutil, sqlite3, string, subprocess, time, urllib.parse, urllib.request, http.client, select, socket

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")
DOMAIN = "app.bench.test"
COOKIE_SECRET = "0123456789abcdef0123456789abcdef"
SESSION_COOKIE = "_keygate_auth"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure(binary, package):
    if shutil.which(binary):
        return
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run(sudo + ["apt-get", "update", "-qq"], check=True)
    subprocess.run(sudo + ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package], check=True)


def proc_cpu(pid):
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except FileNotFoundError:
        return 0.0


def tree_pids(pid):
    """pid and its children (nginx's workers)."""
    out = [pid]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            out += [int(c) for c in open(f"/proc/{pid}/task/{task}/children").read().split()]
    except FileNotFoundError:
        pass
    return out


class Server:
    """A process whose CPU-seconds `measured` reads (`cpu()`: the process and its children)."""
    proc = None

    def cpu(self):
        return sum(proc_cpu(p) for p in tree_pids(self.proc.pid))

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_http(url, proc, log, headers=None, tries=400):
    for _ in range(tries):
        if proc.poll() is not None:
            raise SystemExit(f"{url}: the process exited; see {log}")
        try:
            urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=1)
            return
        except Exception:
            time.sleep(0.05)
    raise SystemExit(f"{url} did not answer; see {log}")


class OidcProvider(Server):
    """oidc-provider 9 (interop/node_modules) in one node process: bench/peers/oidc_provider.mjs."""

    def __init__(self, tmp):
        if not os.path.isdir(os.path.join(ROOT, "interop", "node_modules", "oidc-provider")):
            subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=os.path.join(ROOT, "interop"), check=True)
        self.port = free_port()
        self.log = os.path.join(tmp, "oidc-provider.log")
        self.proc = subprocess.Popen(["node", os.path.join(ROOT, "bench", "peers", "oidc_provider.mjs"), str(self.port)],
                                     stdout=subprocess.PIPE, stderr=open(self.log, "w"), text=True, cwd=ROOT)
        ready, _, _ = select.select([self.proc.stdout], [], [], 60)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.stop()
            raise RuntimeError(f"oidc-provider did not start; see {self.log}")
        info = json.loads(line)
        self.issuer, self.refresh_token, self.authorization = info["issuer"], info["refresh_token"], info["authorization"]
        # The registered client, for bench/codeflow.py's whole flows.
        self.client_id, self.client_secret, self.redirect_uri = info["client_id"], info["client_secret"], info["redirect_uri"]


class Redis(Server):
    def __init__(self, tmp):
        ensure("redis-server", "redis-server")
        self.port = free_port()
        d = os.path.join(tmp, f"redis-{self.port}")
        os.makedirs(d)
        self.log = os.path.join(d, "redis.log")
        self.proc = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
                                      "--daemonize", "no", "--dir", d], stdout=open(self.log, "w"), stderr=subprocess.STDOUT)
        for _ in range(200):
            if self.cli("PING", check=False).strip() == "PONG":
                return
            time.sleep(0.05)
        raise SystemExit(f"redis did not start; see {self.log}")

    def cli(self, *args, check=True, stdin=None):
        r = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, input=stdin)
        if check and r.returncode:
            raise RuntimeError(r.stderr)
        return r.stdout

    def command_calls(self):
        """{command: calls} from INFO commandstats (all databases)."""
        out = self.cli("INFO", "commandstats")
        return {l.split(":", 1)[0][len("cmdstat_"):]: int(l.split("calls=", 1)[1].split(",", 1)[0])
                for l in out.splitlines() if l.startswith("cmdstat_")}

    def used_memory(self):
        info = self.cli("INFO", "memory")
        return int(next(l.split(":")[1] for l in info.splitlines() if l.startswith("used_memory:")))


class Nginx(Server):
    """nginx with `auth_request` to a constant-200 location: the ceiling of an auth subrequest."""

    def __init__(self, tmp):
        ensure("nginx", "nginx")
        self.port = free_port()
        d = os.path.join(tmp, f"nginx-{self.port}")
        os.makedirs(os.path.join(d, "tmp"))
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""daemon off;
worker_processes auto;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {d}/tmp/body;
  proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fastcgi;
  uwsgi_temp_path {d}/tmp/uwsgi;
  scgi_temp_path {d}/tmp/scgi;
  server {{
    listen 127.0.0.1:{self.port};
    location = /_auth {{ internal; return 200; }}
    location / {{ auth_request /_auth; return 200 "ok\\n"; }}
  }}
}}
""")
        self.log = os.path.join(d, "error.log")
        self.proc = subprocess.Popen(["nginx", "-p", d, "-c", conf, "-e", self.log], stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "stderr"), "w"))
        wait_http(f"http://127.0.0.1:{self.port}/", self.proc, self.log)


class Authenticator(Server):
    """`keygate authenticator` with a Redis session store. `cache=False` sets `sessionStore.cache:
    false`: every check reads Redis (the default serves a cookie's checks within a second from
    the session the replica already opened)."""

    def __init__(self, binary, tmp, issuer, redis, cache=True):
        self.port = free_port()
        name = "authenticator" if cache else "authenticator-nocache"
        cfg = os.path.join(tmp, f"{name}.yaml")
        with open(cfg, "w") as f:
            f.write(DEX_AUTHENTICATOR + f"""---
apiVersion: keygate.io/v1alpha1
kind: AuthenticatorConfig
spec:
  listen: 127.0.0.1:{self.port}
  issuer: {issuer}
  cookieSecret: "{COOKIE_SECRET}"
  sessionStore: {{type: redis, url: "redis://127.0.0.1:{redis.port}/0", cache: {"true" if cache else "false"}}}
  refreshBefore: 60s
  logging: {{level: warn}}
""")
        self.log = os.path.join(tmp, f"{name}.log")
        self.proc = subprocess.Popen([binary, "authenticator", "--config", cfg], stdout=open(self.log, "w"), stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}/"
        wait_http(self.url + "healthz", self.proc, self.log)


APACHE_CLIENT_SECRET = "apache-bench-secret"
APACHE_COOKIE = "mod_auth_openidc_session"
APACHE_MODULES = "/usr/lib/apache2/modules"


def apache_client(port):
    """The provider's DexClient for ModAuthOpenidc on `port` (client id dex-client-apache@bench)."""
    return f"""---
apiVersion: deckhouse.io/v1
kind: DexClient
metadata: {{name: apache, namespace: bench}}
spec: {{redirectURIs: ["http://127.0.0.1:{port}/protected/redirect_uri"], secret: {APACHE_CLIENT_SECRET}}}
"""


def apache_binary():
    return shutil.which("apache2") or "/usr/sbin/apache2"


def apache_versions():
    """Installed versions: {"apache2": ..., "mod_auth_openidc": ...} (Debian package versions)."""
    r = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Version}\\n", "apache2", "libapache2-mod-auth-openidc"], capture_output=True, text=True)
    v = dict(l.split(" ", 1) for l in r.stdout.splitlines() if " " in l)
    return {"apache2": v.get("apache2"), "mod_auth_openidc": v.get("libapache2-mod-auth-openidc")}


class ModAuthOpenidc(Server):
    """Apache httpd (mpm_event) + mod_auth_openidc as a relying party of the Keygate provider at
    `issuer`: server-side sessions in Redis (`redis`, database 1, so the authenticator's keys in
    database 0 stay apart), a protected location serving a 3-byte static file. Its own ServerRoot,
    config, pid file and error log in a temp folder; `port` must be the one apache_client(port)
    registered with the provider. The process group is stopped by PID."""

    def __init__(self, tmp, issuer, redis, port):
        if not os.path.exists(os.path.join(APACHE_MODULES, "mod_auth_openidc.so")):
            raise SystemExit("mod_auth_openidc is not installed (apt-get install apache2 libapache2-mod-auth-openidc)")
        self.port = port
        d = os.path.join(tmp, f"apache-{port}")
        os.makedirs(os.path.join(d, "htdocs", "protected"))
        os.chmod(d, 0o755)
        if os.geteuid() == 0:  # the children run as www-data: let them through the 0700 mkdtemp folder
            os.chmod(tmp, os.stat(tmp).st_mode | 0o011)
        with open(os.path.join(d, "htdocs", "protected", "ok.txt"), "w") as f:
            f.write("ok\n")
        self.url = f"http://127.0.0.1:{port}/protected/ok.txt"
        self.log = os.path.join(d, "error.log")
        conf = os.path.join(d, "httpd.conf")
        # Run as root: the children switch to www-data (Debian's user for apache2).
        user = "User www-data\nGroup www-data\n" if os.geteuid() == 0 else ""
        mods = ["mpm_event", "authn_core", "authz_core", "authz_user", "auth_openidc"]
        with open(conf, "w") as f:
            f.write("".join(f"LoadModule {m}_module {APACHE_MODULES}/mod_{m}.so\n" for m in mods) + f"""ServerRoot {d}
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile {d}/httpd.pid
DefaultRuntimeDir {d}
ErrorLog {self.log}
LogLevel warn
{user}# Debian's mods-available/mpm_event.conf
StartServers 2
MinSpareThreads 25
MaxSpareThreads 75
ThreadLimit 64
ThreadsPerChild 25
MaxRequestWorkers 150
MaxConnectionsPerChild 0
KeepAlive On
MaxKeepAliveRequests 0
DocumentRoot {d}/htdocs
<Directory />
  AllowOverride None
</Directory>

OIDCProviderMetadataURL {issuer}.well-known/openid-configuration
OIDCClientID dex-client-apache@bench
OIDCClientSecret {APACHE_CLIENT_SECRET}
OIDCRedirectURI http://127.0.0.1:{port}/protected/redirect_uri
OIDCCryptoPassphrase {secrets.token_hex(16)}
OIDCScope "openid email groups"
OIDCSessionType server-cache
OIDCCacheType redis
OIDCRedisCacheServer 127.0.0.1:{redis.port}
OIDCRedisCacheDatabase 1

<Location /protected/>
  AuthType openid-connect
  Require valid-user
</Location>
""")
        # Apache's own -DFOREGROUND: the parent stays attached; its own session (process group)
        # so that stop() signals the parent and its children together.
        self.proc = subprocess.Popen([apache_binary(), "-f", conf, "-DFOREGROUND"], stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(d, "stderr"), "w"), start_new_session=True)
        for _ in range(400):
            if self.proc.poll() is not None:
                raise SystemExit(f"apache exited; see {self.log} and {d}/stderr")
            try:
                request("GET", self.url)  # 302 to the provider: the module is up
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise SystemExit(f"apache did not answer; see {self.log}")

    def cpu(self):
        """The parent, its live children (the mpm_event processes), and children it already reaped
        (the parent's cutime + cstime), so a child that exits during a run still counts."""
        try:
            fields = open(f"/proc/{self.proc.pid}/stat").read().rsplit(")", 1)[1].split()
            reaped = (int(fields[13]) + int(fields[14])) / TICK
        except FileNotFoundError:
            reaped = 0.0
        return reaped + sum(proc_cpu(p) for p in tree_pids(self.proc.pid))

    def stop(self):
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        # Children that outlived the parent (same process group).
        if self.proc:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


DEX_AUTHENTICATOR = f"""---
apiVersion: deckhouse.io/v1
kind: DexAuthenticator
metadata: {{name: app, namespace: web}}
spec:
  applicationDomain: "{DOMAIN}"
  keepUsersLoggedInFor: 168h
  secret: auth-secret
"""


def request(method, url, body=None, headers=None):
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    c.request(method, u.path + ("?" + u.query if u.query else ""), body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    cookies = [v for k, v in r.getheaders() if k.lower() == "set-cookie"]
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data, cookies


def authenticator_login(auth, issuer):
    """The nginx-less sign-in: /dex-authenticator/sign_in with the application's Host, the
    provider's login form, /dex-authenticator/callback with the state cookie. Returns the session
    cookie's value."""
    host = {"Host": DOMAIN}
    status, h, _, cookies = request("GET", auth.url + "dex-authenticator/sign_in?rd=%2F", headers=host)
    assert status in (302, 303), f"sign_in answered {status}"
    state_cookies = "; ".join(c.split(";", 1)[0] for c in cookies)
    url = h["location"]
    assert url.startswith(issuer), url
    for _ in range(6):  # the provider's redirects to its login form
        status, h, body, _ = request("GET", url)
        if status == 200:
            break
        url = urllib.parse.urljoin(url, h["location"])
    status, h, _, _ = request("POST", url, urllib.parse.urlencode({"login": "jane@example.com", "password": "password"}),
                              {"Content-Type": "application/x-www-form-urlencoded"})
    cb = urllib.parse.urlsplit(h["location"])
    assert cb.path == "/dex-authenticator/callback", h["location"]
    status, h, _, cookies = request("GET", auth.url + "dex-authenticator/callback?" + cb.query, headers={**host, "Cookie": state_cookies})
    session = next((c.split(";", 1)[0].split("=", 1)[1] for c in cookies if c.startswith(SESSION_COOKIE + "=")), None)
    assert session, f"callback answered {status} without a session cookie: {cookies}"
    status, _, _, _ = request("GET", auth.url + "dex-authenticator/auth", headers={**host, "Cookie": f"{SESSION_COOKIE}={session}"})
    assert status == 200, f"auth check with the session cookie answered {status}"
    return session


def apache_login(apache, issuer):
    """mod_auth_openidc's sign-in without a browser: GET the protected URL (302 to the provider's
    /auth with a state cookie), the provider's login form, then the redirect URI with the code and
    the state cookie. Returns the session cookie's value (checked: the protected URL answers 200
    with it alone)."""
    # A browser's navigation: without an Accept header that takes HTML, the module answers 401
    # instead of redirecting (it treats the request as a non-browser one).
    nav = {"Accept": "text/html", "User-Agent": "keygate-bench"}
    status, h, _, cookies = request("GET", apache.url, headers=nav)
    assert status in (302, 303), f"apache answered {status} to the protected URL without a session"
    state_cookies = "; ".join(c.split(";", 1)[0] for c in cookies)
    url = h["location"]
    assert url.startswith(issuer), url
    for _ in range(6):  # the provider's redirects to its login form
        status, h, body, _ = request("GET", url)
        if status == 200:
            break
        url = urllib.parse.urljoin(url, h["location"])
    status, h, _, _ = request("POST", url, urllib.parse.urlencode({"login": "jane@example.com", "password": "password"}),
                              {"Content-Type": "application/x-www-form-urlencoded"})
    cb = h.get("location", "")
    assert cb.startswith(f"http://127.0.0.1:{apache.port}/protected/redirect_uri?"), f"login answered {status}: {cb}"
    status, h, _, cookies = request("GET", cb, headers={**nav, "Cookie": state_cookies})
    session = next((c.split(";", 1)[0].split("=", 1)[1] for c in cookies if c.startswith(APACHE_COOKIE + "=")), None)
    assert session, f"redirect URI answered {status} without a session cookie: {cookies}; see {apache.log}"
    status, _, body, _ = request("GET", apache.url, headers={"Cookie": f"{APACHE_COOKIE}={session}"})
    assert status == 200, f"protected URL with the session cookie answered {status}; see {apache.log}"
    return session


def same_shape(s):
    """A random string of the same length and alphabet class as s."""
    if all(c in string.hexdigits for c in s):
        alphabet = "0123456789abcdef"
    elif all(c in string.ascii_letters + string.digits + "-_" for c in s):
        alphabet = string.ascii_letters + string.digits + "-_"
    else:
        alphabet = string.ascii_letters + string.digits + "+/"
    return "".join(secrets.choice(alphabet) for _ in s)


def redis_per_100k(redis, n):
    """Copy the shape of the real session keys (key length, value length, TTL) n times into Redis
    with a pipeline; used_memory delta scaled to 100k sessions."""
    keys = [k for k in redis.cli("--scan").split() if k]
    shapes = []
    for k in keys:
        shapes.append({"key": k, "type": redis.cli("TYPE", k).strip(), "strlen": int(redis.cli("STRLEN", k) or 0), "ttl": int(redis.cli("TTL", k))})
    if not shapes:
        return {"error": "no session key in Redis after the login", "keys": []}
    before = redis.used_memory()
    lines = []
    for i in range(n):
        for s in shapes:
            key = s["key"][: len(s["key"]) // 2] + same_shape(s["key"][len(s["key"]) // 2:]) if len(s["key"]) > 8 else f"{s['key']}{i}"
            val = secrets.token_urlsafe(s["strlen"])[: s["strlen"]]
            parts = ["SET", key, val, "EX", str(max(s["ttl"], 60))]
            lines.append(f"*{len(parts)}\r\n" + "".join(f"${len(p)}\r\n{p}\r\n" for p in parts))
    out = redis.cli("--pipe", stdin="".join(lines))
    after = redis.used_memory()
    return {"sessions_inserted": n, "bytes_per_100k": (after - before) * 100_000 / n, "keys_per_session": len(shapes),
            "shape": [{k: v for k, v in s.items() if k != "key"} | {"key_len": len(s["key"])} for s in shapes],
            "pipe": out.strip().splitlines()[-1] if out.strip() else ""}


def db_rows(path):
    c = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    rows = {(r[0], r[1]): r for r in c.execute("SELECT kind, id, version, owner, expires_at, data FROM objects")}
    c.close()
    return rows


def sqlite_per_100k(db, family, tmp, n):
    """Clone the rows one refresh-token login left in the provider's `objects` table (`family`:
    the rows present after the code exchange and not before) n times into a copy of the database;
    file size delta scaled to 100k families."""
    if not family:
        return {"error": "no new rows after the login"}
    copy = os.path.join(tmp, "families.db")
    src = sqlite3.connect(db)
    dst = sqlite3.connect(copy)
    src.backup(dst)
    src.close()
    dst.execute("PRAGMA journal_mode=DELETE")
    dst.commit()
    before = os.path.getsize(copy)
    ids = [r[1] for r in family]
    batch = []
    for _ in range(n):
        new = {i: same_shape(i) for i in ids}
        for kind, id_, version, owner, expires_at, data in family:
            for old, nid in new.items():
                data = data.replace(old, nid)
                owner = owner.replace(old, nid) if owner else owner
            batch.append((kind, new[id_], version, owner, expires_at, data))
    dst.executemany("INSERT INTO objects (kind, id, version, owner, expires_at, data) VALUES (?,?,?,?,?,?)", batch)
    dst.commit()
    dst.close()
    after = os.path.getsize(copy)
    return {"families_inserted": n, "bytes_per_100k": (after - before) * 100_000 / n,
            "rows_per_family": [{"kind": r[0], "data_bytes": len(r[5])} for r in family]}
