#!/usr/bin/env python3
"""Keygate benchmark harness: one command builds in release mode, starts everything on 127.0.0.1,
measures with wrk from a separate process, and writes docs/BENCHMARKS.md plus an SVG chart.

Figures are ratios measured in the same run: against the same binary's plain 200 endpoint
(/healthz), against in-process limits of the work itself (one signature per refresh, one bcrypt
compare per login, examples/limits.rs), per CPU-second of the server process, and against peers
started by the harness (bench/stack.py): oidc-provider 9 in node (bench/peers/oidc_provider.mjs) for
discovery, JWKS, the RS256 refresh grant and the full authorization-code flow (bench/codeflow.py: whole
flows from /auth to the token answer, by a python driver instead of wrk); nginx `auth_request` to a constant 200 as the ceiling of
the authenticator's auth check (Redis sessions), and Apache httpd + mod_auth_openidc (Redis server-side
sessions, full run only) as a like-for-like peer of it. Also Redis memory per 100k sessions and SQLite file
size per 100k refresh-token families.

  bench/run.py            full run (~5 minutes after the build), writes docs/BENCHMARKS.md
  bench/run.py --smoke    1-second runs on the debug build, writes bench/out/ (the test command)
"""
import stack, codeflow
import argparse, base64, json, os, re, shutil, socket, subprocess, sys, tempfile, time, urllib.parse, urllib.request, http.client

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HASH = "$2a$10$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W"  # "password"
TICK = os.sysconf("SC_CLK_TCK")


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw).stdout


def ensure_wrk():
    if shutil.which("wrk"):
        return
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run(sudo + ["apt-get", "update", "-qq"], check=True)
    subprocess.run(sudo + ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "wrk"], check=True)


def ensure_apache():
    """Apache httpd and mod_auth_openidc (Debian packages) for the full run's auth-check peer."""
    if os.path.exists(os.path.join(stack.APACHE_MODULES, "mod_auth_openidc.so")) and os.path.exists(stack.apache_binary()):
        return
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run(sudo + ["apt-get", "update", "-qq"], check=True)
    subprocess.run(sudo + ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "apache2", "libapache2-mod-auth-openidc"], check=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_bytes(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Keygate:
    def __init__(self, binary, tmp, alg, extra="", name=None, reuse="10m"):
        self.port = free_port()
        name = name or alg
        self.db = f"{tmp}/keygate-{name}.db"
        self.issuer = f"http://127.0.0.1:{self.port}/"
        cfg = os.path.join(tmp, f"keygate-{name}.yaml")
        with open(cfg, "w") as f:
            f.write(f"""apiVersion: keygate.io/v1alpha1
kind: KeygateConfig
spec:
  issuer: {self.issuer}
  listen: 127.0.0.1:{self.port}
  storage: {{type: sqlite, path: {self.db}}}
  signing: {{algorithm: {alg}}}
  refreshTokens: {{reuseInterval: {reuse}}}
  bruteForce: {{attempts: 4000000000, perIP: {{attempts: 4000000000}}}}
  logging: {{level: warn}}
---
apiVersion: deckhouse.io/v1
kind: User
metadata: {{name: jane}}
spec: {{email: jane@example.com, password: "{HASH}"}}
---
apiVersion: deckhouse.io/v1
kind: DexClient
metadata: {{name: app, namespace: bench}}
spec: {{redirectURIs: ["https://app.example.com/cb"], secret: bench-secret}}
{extra}""")
        self.log = open(os.path.join(tmp, f"keygate-{name}.log"), "w")
        self.proc = subprocess.Popen([binary, "serve", "--config", cfg], stdout=self.log, stderr=self.log)
        for _ in range(200):
            try:
                urllib.request.urlopen(self.issuer + "healthz", timeout=1)
                return
            except Exception:
                time.sleep(0.05)
        raise SystemExit(f"keygate did not start; see {self.log.name}")

    def cpu(self):
        return cpu_seconds(self.proc.pid)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def request(method, url, body=None, headers=None):
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    c.request(method, u.path + ("?" + u.query if u.query else ""), body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data


def login_form(kg):
    q = urllib.parse.urlencode({"client_id": "dex-client-app@bench", "redirect_uri": "https://app.example.com/cb", "response_type": "code", "scope": "openid email groups offline_access", "state": "s"})
    url = kg.issuer + "auth?" + q
    for _ in range(2):
        status, h, _ = request("GET", url)
        url = urllib.parse.urljoin(url, h["location"])
    return url


def refresh_token(kg):
    form = login_form(kg)
    status, h, _ = request("POST", form, urllib.parse.urlencode({"login": "jane@example.com", "password": "password"}), {"Content-Type": "application/x-www-form-urlencoded"})
    code = urllib.parse.parse_qs(urllib.parse.urlsplit(h["location"]).query)["code"][0]
    basic = "Basic " + base64.b64encode(b"dex-client-app%40bench:bench-secret").decode()
    status, _, body = request("POST", kg.issuer + "token", urllib.parse.urlencode({"grant_type": "authorization_code", "code": code, "redirect_uri": "https://app.example.com/cb"}), {"Content-Type": "application/x-www-form-urlencoded", "Authorization": basic})
    return json.loads(body)["refresh_token"], basic


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


# A wrk script that waits 5 ms before each request of a connection: a steady rate, not saturation.
PACED = "function delay()\n  return 5\nend\n"


def wrk(url, seconds, connections, tmp, lua=None, threads=2, script_args=()):
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--latency"]
    if lua:
        path = os.path.join(tmp, f"script-{abs(hash(lua))}.lua")
        open(path, "w").write(lua)
        cmd += ["-s", path]
    out = sh(cmd + [url] + (["--", *script_args] if script_args else []))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {}
    for p, v, u in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M):
        lat[p] = float(v) * UNITS[u]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r = {"rps": rps, "p50_ms": lat.get("50"), "p99_ms": lat.get("99"), "non_2xx": int(non2xx.group(1)) if non2xx else 0}
    errors = re.search(r"Socket errors: (.*)$", out, re.M)
    if errors:
        r["socket_errors"] = errors.group(1).strip()
    tokens = re.search(r"^TOKENS (.*)$", out, re.M)  # bench/rotate.lua
    if tokens:
        r["tokens"] = tokens.group(1).split()
    failed = re.search(r"^FAILED (\d+)$", out, re.M)
    if failed:
        r["failed_answers"] = int(failed.group(1))
    return r


def measured(kg, url, seconds, connections, tmp, lua=None, also=(), script_args=()):
    """wrk against url; requests per CPU-second of kg (its process, or `kg.cpu()` for a process
    tree). `also`: {name: server} whose CPU-seconds during the run are recorded too (Redis)."""
    cpu_of = getattr(kg, "cpu", None) or (lambda: cpu_seconds(kg.proc.pid))
    before, others = cpu_of(), {n: s.cpu() for n, s in dict(also).items()}
    r = wrk(url, seconds, connections, tmp, lua, script_args=script_args)
    cpu = cpu_of() - before
    r["cpu_seconds"] = cpu
    r["per_cpu_second"] = r["rps"] * seconds / cpu if cpu > 0 else None
    for n, s in dict(also).items():
        r[f"{n}_cpu_seconds"] = s.cpu() - others[n]
    return r


def sign_limit(limits_bin, alg):
    """One short run of the signature micro-benchmark, made next to a refresh run (None in smoke
    runs, which have no release build of it)."""
    if not limits_bin:
        return None
    return json.loads(sh([limits_bin, "sign", alg, "1.5"]))[f"sign_{alg}_per_sec"]


def paired_runs(measure, limit, rounds):
    """`rounds` runs of measure(), each between two runs of limit(): the median run, with each
    run's limit (the mean of the runs before and after it) in `rounds_limit`, which
    limit_ratio() pairs with the run."""
    runs, limits = [], []
    before = limit()
    for _ in range(rounds):
        runs.append(measure())
        after = limit()
        limits.append((before + after) / 2 if before and after else None)
        before = after
    m = median_run(runs)
    m["rounds_limit"] = limits
    return m


def rotating_refresh(kg, seconds, rounds, tmp, limit):
    """Refresh grants outside the reuse window (`reuseInterval: 0s`): each one rotates its family's
    token, one compare-and-swap write in SQLite, the path of kubectl refreshing an expired ID
    token. 8 connections, each request on a family of its own (bench/rotate.lua); a run ends with
    up to 8 requests in flight whose families are dropped, so each run starts with 8 more than
    the last one needs, and 8 to spare."""
    connections, threads = 8, 2
    tokens, basic = [], None
    for _ in range(connections * (rounds + 2)):
        token, basic = refresh_token(kg)
        tokens.append(token)
    lua = f"AUTH = {json.dumps(basic)}\n" + open(os.path.join(ROOT, "bench", "rotate.lua")).read()
    def one_run():
        nonlocal tokens
        if len(tokens) < connections:
            raise SystemExit(f"rotating refresh: {len(tokens)} refresh tokens left for {connections} connections")
        m = measured(kg, kg.issuer + "token", max(1, seconds // 2), connections, tmp, lua, script_args=[str(threads), *tokens])
        if "tokens" not in m or "failed_answers" not in m:
            raise SystemExit("rotating refresh: bench/rotate.lua printed no TOKENS or FAILED line")
        tokens = m.pop("tokens")
        if m["non_2xx"] or m.get("socket_errors") or m.get("failed_answers"):
            raise SystemExit(f"rotating refresh: {m['non_2xx']} answers not 2xx, {m.get('failed_answers')} without a "
                             f"refresh token, socket errors {m.get('socket_errors')}; see {kg.log.name}")
        m["rotations"] = round(m["rps"] * max(1, seconds // 2))
        return m
    return paired_runs(one_run, limit, rounds)


def provider_rss_with_families(binary, tmp, secs, servers):
    """RSS of a provider whose database holds the cloned families (stack.sqlite_per_100k's copy)
    and of one whose database holds a few, each after one login, a run of refresh grants and a
    run of discovery."""
    out = {}
    for name, db in [("few", None), ("many", os.path.join(tmp, "families.db"))]:
        if db:
            shutil.copy(db, os.path.join(tmp, f"keygate-rss-{name}.db"))
        kg = Keygate(binary, tmp, "RS256", name=f"rss-{name}")
        servers.append(kg)
        token, basic = refresh_token(kg)
        body = urllib.parse.urlencode({"grant_type": "refresh_token", "refresh_token": token})
        measured(kg, kg.issuer + "token", max(1, secs // 3), 8, tmp, post_lua(body, {"Authorization": basic}))
        measured(kg, kg.issuer + ".well-known/openid-configuration", max(1, secs // 3), 32, tmp)
        rows = stack.sqlite3.connect(kg.db).execute("SELECT count(*) FROM objects WHERE kind = 'refresh_token'").fetchone()[0]
        out[name] = {"rss_bytes": rss_bytes(kg.proc.pid), "refresh_tokens": rows}
        kg.stop()
    return out


def code_flow(client, server, seconds, smoke, name):
    """bench/codeflow.py's driver against `server` (CPU-seconds of its process, or `server.cpu()`).
    The smoke run fails on any failed flow; the full run records failures and reports them."""
    res = codeflow.run(client, server.cpu, seconds)
    if not res["flows"] or (smoke and res["failures"]):
        raise SystemExit(f"{name}: authorization-code flows: {res['flows']} succeeded, {res['failures']} failed: {res['errors']}")
    return res


def get_lua(headers):
    return "".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}\n" for k, v in headers.items())


def post_lua(body, headers):
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(body)}", 'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"']
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    return "\n".join(lines) + "\n"


def machine():
    model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
    mem = next((int(l.split()[1]) // 1024 for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
    return {"cpus": os.cpu_count(), "model": model, "memory_mib": mem, "kernel": os.uname().release}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="1-second runs on the debug build; writes bench/out/")
    ap.add_argument("--report-only", metavar="JSON", help="re-render the report from a results file")
    args = ap.parse_args()
    if args.report_only:
        report(json.load(open(args.report_only)), os.path.join(ROOT, "docs"), False)
        return
    secs = 1 if args.smoke else 10
    rounds = 1 if args.smoke else ROUNDS
    ensure_wrk()
    if not args.smoke:
        ensure_apache()
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    profile = [] if args.smoke else ["--release"]
    build = "debug" if args.smoke else "release"
    # The test command passes the binary it already built (KEYGATE_BIN) to the smoke run.
    binary = os.environ.get("KEYGATE_BIN") if args.smoke else None
    if not binary:
        sh(["cargo", "build", "-p", "keygate", *profile], cwd=ROOT)
        binary = os.path.join(target, build, "keygate")
    if not args.smoke:
        sh(["cargo", "build", "-p", "keygate-oidc", "--example", "limits", *profile], cwd=ROOT)
    limits_bin = None if args.smoke else os.path.join(target, build, "examples", "limits")
    if args.smoke:
        limits = {"sign_RS256_per_sec": 0, "sign_ES256_per_sec": 0, "bcrypt10_verify_per_sec": 0}
    else:
        # The median of three runs of the micro-benchmark, like the figures compared with it.
        samples = [json.loads(sh([os.path.join(target, build, "examples", "limits")])) for _ in range(ROUNDS)]
        limits = {k: sorted(x[k] for x in samples)[len(samples) // 2] for k in samples[0]}
    tmp = tempfile.mkdtemp(prefix="keygate-bench-")
    results = {"machine": machine(), "limits": limits, "seconds": secs, "rounds": rounds, "build": build}
    n_mem = 5_000 if args.smoke else 100_000
    servers = []
    try:
        for alg in ["RS256", "ES256"]:
            kg = Keygate(binary, tmp, alg)
            servers.append(kg)
            r = results.setdefault(alg, {})
            # Warm-up, not recorded: the first seconds after start-up ran slower in every run (up
            # to 20%), which made the plain 200 ceiling, measured first, too low.
            wrk(kg.issuer + "healthz", min(secs, 3), 32, tmp)
            # The figures compared with each other run in turns, ROUNDS times each, and the median
            # run counts: this machine's throughput drifts by up to 10% from one run to the next.
            short = max(1, secs // 2)
            runs = {"plain_200": [], "discovery": [], "jwks": []}
            for _ in range(rounds):
                runs["plain_200"].append(measured(kg, kg.issuer + "healthz", short, 32, tmp))
                runs["discovery"].append(measured(kg, kg.issuer + ".well-known/openid-configuration", short, 32, tmp))
                runs["jwks"].append(measured(kg, kg.issuer + "keys", short, 32, tmp))
            for k, v in runs.items():
                r[k] = median_run(v)
            rows_before = stack.db_rows(kg.db)
            token, basic = refresh_token(kg)
            if alg == "RS256":
                rows_after = stack.db_rows(kg.db)
                # The family's rows: the refresh token (the used authorization code, kept until it
                # expires, and the login limiter's counter are not part of it).
                family = [row for key, row in rows_after.items() if key not in rows_before and "refresh" in row[0]]
            body = urllib.parse.urlencode({"grant_type": "refresh_token", "refresh_token": token})
            # Each run right after a short run of the signature micro-benchmark: the ratio to the
            # limit is the median of the run-by-run ratios (limit_ratio()).
            r["refresh"] = paired_runs(lambda: measured(kg, kg.issuer + "token", short, 8, tmp, post_lua(body, {"Authorization": basic})),
                                       lambda: sign_limit(limits_bin, alg), rounds)
            if alg == "RS256":
                form = login_form(kg)
                for who in ["jane@example.com", "nobody@example.com"]:
                    lua = post_lua(urllib.parse.urlencode({"login": who, "password": "wrong"}), {})
                    r["login_known" if who.startswith("jane") else "login_unknown"] = measured(kg, form, secs, 4, tmp, lua)
                # Discovery p99 idle and during a login storm (16 concurrent wrong-password logins),
                # at a steady rate (8 connections, 5 ms between a connection's requests), the same
                # wrk settings both times. At saturation a closed-loop wrk sharing the two CPUs
                # measures the scheduler's time slices, not the server.
                r["discovery_idle_c8"] = wrk(kg.issuer + ".well-known/openid-configuration", secs, 8, tmp, PACED, threads=1)
                lua = post_lua(urllib.parse.urlencode({"login": "jane@example.com", "password": "wrong"}), {})
                storm_lua = os.path.join(tmp, "storm.lua")
                with open(storm_lua, "w") as f:
                    f.write(lua)
                storm = subprocess.Popen(["wrk", "-t", "1", "-c", "16", "-d", f"{secs + 2}s", "-s", storm_lua, form], stdout=subprocess.DEVNULL)
                time.sleep(1)
                r["discovery_storm_c8"] = wrk(kg.issuer + ".well-known/openid-configuration", secs, 8, tmp, PACED, threads=1)
                storm.wait()
                r["rss_bytes"] = rss_bytes(kg.proc.pid)
                # Whole authorization-code flows (one bcrypt compare each), after the figures above.
                r["code_flow"] = code_flow(codeflow.keygate_client(kg), kg, secs, args.smoke, "Keygate")
            kg.stop()
        # The refresh grant that rotates, on a provider of its own (no reuse window).
        kg = Keygate(binary, tmp, "RS256", name="rotating", reuse="0s")
        servers.append(kg)
        results["RS256"]["refresh_rotating"] = rotating_refresh(kg, secs, rounds, tmp, lambda: sign_limit(limits_bin, "RS256"))
        kg.stop()
        # Storage per 100k refresh-token families: the rows of the login above, cloned into a copy.
        results["sqlite_families"] = stack.sqlite_per_100k(servers[0].db, family, tmp, n_mem)
        # The provider's resident memory with those families in its database, against the same
        # provider with only its own few: the same login, refreshes and discovery on both.
        if "error" not in results["sqlite_families"]:
            results["provider_rss_families"] = provider_rss_with_families(binary, tmp, secs, servers)
        # Peer: oidc-provider 9 in node, RS256, refresh-token rotation off (one token replayed).
        op = stack.OidcProvider(tmp)
        servers.append(op)
        p = results["oidc_provider"] = {}
        p["discovery"] = measured(op, op.issuer + ".well-known/openid-configuration", secs, 32, tmp)
        p["jwks"] = measured(op, op.issuer + "jwks", secs, 32, tmp)
        body = urllib.parse.urlencode({"grant_type": "refresh_token", "refresh_token": op.refresh_token})
        p["refresh"] = measured(op, op.issuer + "token", secs, 8, tmp, post_lua(body, {"Authorization": op.authorization}))
        p["rss_bytes"] = rss_bytes(op.proc.pid)
        # After the refresh figure: its in-memory store (an LRU of 1000 entries) drops old tokens.
        p["code_flow"] = code_flow(codeflow.oidc_provider_client(op), op, secs, args.smoke, "oidc-provider")
        op.stop()
        # The authenticator's auth check (valid session, Redis store) and nginx's auth_request ceiling.
        redis = stack.Redis(tmp)
        servers.append(redis)
        # The full run also registers Apache's client (its redirect URI carries Apache's port).
        apache_port = None if args.smoke else stack.free_port()
        prov = Keygate(binary, tmp, "RS256", extra=stack.DEX_AUTHENTICATOR + (stack.apache_client(apache_port) if apache_port else ""), name="authn")
        servers.append(prov)
        auth = stack.Authenticator(binary, tmp, prov.issuer, redis)
        servers.append(auth)
        session = stack.authenticator_login(auth, prov.issuer)
        a = results["authenticator"] = {}
        lua = get_lua({"Host": stack.DOMAIN, "Cookie": f"{stack.SESSION_COOKIE}={session}"})
        a["auth_check"] = redis_counted(redis, lambda: measured(auth, auth.url + "dex-authenticator/auth", secs, 32, tmp, lua, also={"redis": redis, "provider": prov}), secs)
        a["auth_plain_200"] = measured(auth, auth.url + "healthz", secs, 32, tmp)
        auth.stop()
        # The same session through an authenticator that reads Redis on every check (`cache: false`).
        auth = stack.Authenticator(binary, tmp, prov.issuer, redis, cache=False)
        servers.append(auth)
        a["auth_check_store"] = redis_counted(redis, lambda: measured(auth, auth.url + "dex-authenticator/auth", secs, 32, tmp, lua, also={"redis": redis, "provider": prov}), secs)
        auth.stop()
        a["mod_auth_openidc"] = None  # smoke runs: not measured (see the report)
        if apache_port:
            # Peer: Apache + mod_auth_openidc, a relying party of the same provider, sessions in the
            # same Redis (database 1: the session-size figure below scans database 0 only).
            apache = stack.ModAuthOpenidc(tmp, prov.issuer, redis, apache_port)
            servers.append(apache)
            cookie = stack.apache_login(apache, prov.issuer)
            m = redis_counted(redis, lambda: measured(apache, apache.url, secs, 32, tmp, get_lua({"Cookie": f"{stack.APACHE_COOKIE}={cookie}"}), also={"redis": redis, "provider": prov}), secs)
            m["versions"] = stack.apache_versions()
            a["mod_auth_openidc"] = m
            apache.stop()
        prov.stop()
        results["redis_sessions"] = stack.redis_per_100k(redis, n_mem)
        redis.stop()
        ngx = stack.Nginx(tmp)
        servers.append(ngx)
        a["nginx_auth_request"] = measured(ngx, f"http://127.0.0.1:{ngx.port}/", secs, 32, tmp)
        ngx.stop()
    finally:
        for kg in servers:
            kg.stop()
    out_dir = os.path.join(ROOT, "bench", "out") if args.smoke else os.path.join(ROOT, "docs")
    os.makedirs(out_dir, exist_ok=True)
    json.dump(results, open(os.path.join(ROOT, "bench", "out-latest.json") if not args.smoke else os.path.join(out_dir, "results.json"), "w"), indent=2)
    report(results, out_dir, args.smoke)
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {out_dir}/BENCHMARKS.md")


ROUNDS = 3


def median_run(runs):
    """The run with the median requests per CPU-second; the others are kept for the record."""
    ordered = sorted(runs, key=lambda m: m.get("per_cpu_second") or 0)
    m = dict(ordered[len(ordered) // 2])
    m["rounds_per_cpu_second"] = [x.get("per_cpu_second") for x in runs]
    return m


def redis_counted(redis, run_it, secs):
    """run_it() -> a measured() result, plus the Redis commands per request it caused."""
    calls = redis.command_calls()
    m = run_it()
    n = m["rps"] * secs
    m["redis_calls_per_request"] = {k: round((v - calls.get(k, 0)) / n, 4) for k, v in redis.command_calls().items()
                                    if k != "info" and v != calls.get(k, 0)} if n else {}
    return m


def ratio(a, b):
    return a / b if a and b else None


def fmt(v, digits=0):
    return "n/a" if v is None else f"{v:,.{digits}f}"


def pct(v):
    return "n/a" if v is None else f"{100 * v:.0f}%"


def peers_section(r):
    op, a = r.get("oidc_provider"), r.get("authenticator")
    if not op or not a:
        return "Peers and storage sizes: not in this results file."
    rs = r["RS256"]
    lines = ["## Against peers (same run)", "",
             "| workload | Keygate req/s | Keygate per CPU-s | peer | peer req/s | peer per CPU-s | ratio req/s | ratio per CPU-s |",
             "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
    def row(name, k, peer, p):
        if k is None:
            lines.append(f"| {name} | not measured | | {peer} | {'not measured' if p is None else fmt(p['rps'])} | "
                         f"{'' if p is None else fmt(p.get('per_cpu_second'))} | | |")
            return
        if p is None:
            lines.append(f"| {name} | {fmt(k['rps'])} | {fmt(k.get('per_cpu_second'))} | {peer} | not measured | | | |")
            return
        lines.append(f"| {name} | {fmt(k['rps'])} | {fmt(k.get('per_cpu_second'))} | {peer} | {fmt(p['rps'])} | {fmt(p.get('per_cpu_second'))} | "
                     f"{fmt(ratio(k['rps'], p['rps']), 2)}x | {fmt(ratio(k.get('per_cpu_second'), p.get('per_cpu_second')), 2)}x |")
    row("discovery", rs["discovery"], "oidc-provider 9 (node)", op["discovery"])
    row("JWKS", rs["jwks"], "oidc-provider 9 (node)", op["jwks"])
    row("refresh grant, RS256", rs["refresh"], "oidc-provider 9 (node)", op["refresh"])
    row("full authorization-code flow (flows)", rs.get("code_flow"), "oidc-provider 9 (node)", op.get("code_flow"))
    row("auth check, valid session, Redis", a["auth_check"], "nginx `auth_request` to a constant 200", a["nginx_auth_request"])
    row("auth check, valid session, Redis", a["auth_check"], "Apache mod_auth_openidc", a.get("mod_auth_openidc"))
    if a.get("auth_check_store"):
        row("auth check, every check reads Redis (`cache: false`)", a["auth_check_store"], "nginx `auth_request` to a constant 200", a["nginx_auth_request"])
        row("auth check, every check reads Redis (`cache: false`)", a["auth_check_store"], "Apache mod_auth_openidc", a.get("mod_auth_openidc"))
    ac = a["auth_check"]
    sq, rd = r.get("sqlite_families") or {}, r.get("redis_sessions") or {}
    rss = r.get("provider_rss_families") or {}
    shape = (rd.get("shape") or [{}])[0]
    fam = ", ".join(f"{x['kind']} ({x['data_bytes']} B of JSON)" for x in sq.get("rows_per_family", [])) or "n/a"
    lines += ["",
              "- oidc-provider 9 from `interop/node_modules`, in one node process (`bench/peers/oidc_provider.mjs`, reusing",
              "  `interop/lib/upstream-idp.mjs`: in-memory adapter, development login/consent pages), CPU-seconds of that process.",
              "  Its refresh token comes from one login + consent with `offline_access` and `prompt=consent` (PKCE S256);",
              "  **refresh-token rotation is off** (`rotateRefreshToken: false`) so that one token is replayed, as Keygate's",
              "  reuse window replays one. Its answer carries one RS256 JWT (the ID token; its access token is opaque, stored in",
              "  memory), as does Keygate's (its access token is the ID token).",
              f"  Resident memory of the node process after the refresh run: {fmt(op.get('rss_bytes', 0) / 1048576, 1)} MiB.",
              "  Its full authorization-code flow is described with Keygate's under the first table.",
              "- Auth check: `keygate authenticator` with a Redis session store, one session made by the nginx-less sign-in",
              "  (`/dex-authenticator/sign_in` with a `Host` header, the provider's form, `/dex-authenticator/callback`), then",
              "  `wrk` GETs `/dex-authenticator/auth` with the session cookie and `Host` set (all answers 200: "
              f"{ac.get('non_2xx', 0)} non-2xx). During it Redis used {fmt(ac.get('redis_cpu_seconds'), 2)} CPU-s and the provider "
              f"{fmt(ac.get('provider_cpu_seconds'), 2)} CPU-s (not counted in the per-CPU-second column).",
              f"  The authenticator's own `/healthz` reached {fmt(a['auth_plain_200']['rps'])} req/s "
              f"({fmt(a['auth_plain_200'].get('per_cpu_second'))} per CPU-s): the check runs at "
              f"{pct(ratio(ac['rps'], a['auth_plain_200']['rps']))} of it.",
              "  By default the checks of one cookie within a second reuse the session the replica opened from Redis",
              "  (docs/deployment.md, sessions): a browser's burst of requests costs one Redis read a second. One session",
              f"  replayed is that case at its extreme: Redis calls per check {redis_calls(ac)}.",
              *store_lines(a.get("auth_check_store"), ac, a.get("nginx_auth_request")),
              "- nginx ceiling: nginx (`worker_processes auto`, access log off) with `auth_request` to an `internal` location",
              "  answering a constant 200, then `return 200`: the cheapest possible auth subrequest, no cookie, no store; CPU of",
              "  master and workers. It is an upper bound for any nginx-based check, not a like-for-like peer.",
              *apache_lines(a.get("mod_auth_openidc")),
              "",
              "## Storage",
              "",
              f"- **Redis, per 100k authenticator sessions:** {fmt((rd.get('bytes_per_100k') or 0) / 1048576, 1)} MiB of `used_memory` "
              f"({fmt((rd.get('bytes_per_100k') or 0) / 100_000)} B each). Measured by copying the shape of the real session key left by",
              f"  the sign-in above ({rd.get('keys_per_session', 'n/a')} key per session, {shape.get('key_len', 'n/a')}-character key, {shape.get('strlen', 'n/a')}-byte value, TTL {shape.get('ttl', 'n/a')} s)",
              f"  into Redis {rd.get('sessions_inserted', 'n/a'):,} times with random values through `redis-cli --pipe`, and reading `INFO memory` before and after.",
              f"- **SQLite, per 100k refresh-token families:** {fmt((sq.get('bytes_per_100k') or 0) / 1048576, 1)} MiB of database file "
              f"({fmt((sq.get('bytes_per_100k') or 0) / 100_000)} B each). The rows one login with `offline_access` added to the",
              f"  `objects` table ({fam}) cloned {sq.get('families_inserted', 'n/a'):,} times with fresh ids into a copy of the database (python",
              "  sqlite3, indexes included); the used authorization code (kept until it expires) and the login limiter's row are left out.",
              *rss_lines(rss),
              ]
    return "\n".join(lines) + "\n"


def rss_lines(rss):
    few, many = rss.get("few"), rss.get("many")
    if not few or not many:
        return []
    added = many["refresh_tokens"] - few["refresh_tokens"]
    if added <= 0:
        return []
    per = (many["rss_bytes"] - few["rss_bytes"]) * 100_000 / added
    lines = [f"- **Provider memory, per 100k refresh-token families:** {fmt(per / 1048576, 1)} MiB of resident memory"
             + (", that is none measurable (the difference of two processes)." if abs(per) < 2 * 1048576 else "."),
             f"  A provider on that copy ({fmt(many['refresh_tokens'])} refresh tokens) used {fmt(many['rss_bytes'] / 1048576, 1)} MiB, one on a",
             f"  database with {fmt(few['refresh_tokens'])} used {fmt(few['rss_bytes'] / 1048576, 1)} MiB, each after one login, a run of refresh",
             "  grants and a run of discovery."]
    if abs(per) < 2 * 1048576:
        lines += ["  The families stay in the file (and the kernel's page cache), not in the process; each SQLite connection",
                  "  caches at most 2 MiB of pages (SQLite's default)."]
    return lines


def code_flow_bullet(r):
    """The bullet under the first table: what one authorization-code flow is on each side."""
    k, op = r["RS256"].get("code_flow"), (r.get("oidc_provider") or {}).get("code_flow")
    if not k and not op:
        return "- **Full authorization-code flow:** not measured in this run (results from before bench/codeflow.py)."
    lim = r["limits"].get("bcrypt10_verify_per_sec")

    def side(m):
        if not m:
            return "not measured"
        return (f"{fmt(m['flows'])} flows and **{fmt(m['failures'])} failed** in {fmt(m['seconds'], 1)} s, "
                f"{fmt(m.get('requests_per_flow'), 0)} requests each (`{' -> '.join(m.get('trace') or []) or 'n/a'}`), "
                f"{fmt(m['cpu_seconds'], 2)} server CPU-s, {fmt(m.get('client_cpu_seconds'), 2)} CPU-s of the python driver")
    est = ""
    if op and op.get("per_cpu_second") and lim:
        est = (f" One bcrypt cost-10 compare at the in-process rate added to each of its flows would bound it at about "
               f"{fmt(1 / (1 / op['per_cpu_second'] + 1 / lim))} flows per CPU-s (an estimate, not a measurement).")
    conc = (k or op)["concurrency"]
    return "\n".join([
        f"- **Full authorization-code flow** (`bench/codeflow.py`: {conc} virtual users in one python process, stdlib threads,",
        "  one keep-alive connection each, flows back to back, a fresh cookie jar and fresh PKCE verifier, `state` and",
        "  `nonce` per flow; latency is that of a whole flow; a flow counts only if every step answered as expected, the",
        "  redirect carried the code and the same `state`, and the token answer (200) held a refresh token and an ID token",
        "  with the flow's `nonce`). One flow: `GET /auth` (client `dex-client-app@bench`, scope `openid email groups",
        "  offline_access`, PKCE S256) -> redirects to the password form -> POST of jane's correct password (**one bcrypt",
        "  cost-10 compare**) -> 303 to the redirect URI -> `POST /token` (`authorization_code`, `client_secret_basic`,",
        "  `code_verifier`): one JWT signed (RS256; the access token is the ID token), refresh token and code stored in SQLite; no approval",
        "  screen (Keygate never shows one). Keygate: " + side(k) + ".",
        "  oidc-provider: the same scope plus `prompt=consent` (PKCE S256, client `bench`): its development login page",
        "  (account `jane`), whose password **is not checked** (no bcrypt implementation in `interop/node_modules`; the",
        "  development interactions accept any password), then its consent page (its default for a new grant: three more",
        "  requests: page, POST, resume), then `POST /token` as above: ID token",
        "  signed (RS256), opaque access and refresh tokens, all in its in-memory store (an LRU of 1000 entries). "
        + side(op) + "." + est,
    ])


def redis_calls(m):
    calls = sorted((m.get("redis_calls_per_request") or {}).items())
    return ", ".join(f"{n:.2g} `{k.upper()}`" for k, n in calls if n >= 0.0001) or "none"


def store_lines(m, hit=None, ceiling=None):
    if not m:
        return []
    lines = [f"  With `sessionStore.cache: false` every check reads Redis ({redis_calls(m)} per check) and opens the",
             f"  cookie and the stored session (two AEAD opens): {fmt(m['rps'])} req/s, {fmt(m.get('per_cpu_second'))} per CPU-s",
             f"  ({m.get('non_2xx', 0)} non-2xx; Redis used {fmt(m.get('redis_cpu_seconds'), 2)} CPU-s, not counted). That is the cost of a",
             "  check whose cookie was not seen in the current second, and the like-for-like comparison with Apache",
             "  mod_auth_openidc below, which reads Redis (twice) on every request."]
    miss, hit = m.get("per_cpu_second"), (hit or {}).get("per_cpu_second")
    top = (ceiling or {}).get("per_cpu_second")
    if miss and hit:
        # CPU per check of a burst: one miss, then hits (an estimate from the two measured costs).
        burst = 20 / (1 / miss + 19 / hit)
        lines += [f"  A page load of 20 requests with one cookie costs one check that reads Redis and 19 from memory: by the two",
                  f"  measured costs, about {fmt(burst)} checks per CPU-s" + (f", {pct(burst / top)} of the nginx ceiling" if top else "") +
                  " (an estimate, not a measurement)."]
    return lines


def apache_lines(m):
    if not m:
        return ["- Apache mod_auth_openidc: not measured in this run (smoke runs skip it; the full run installs `apache2` and",
                "  `libapache2-mod-auth-openidc` and measures it)."]
    v = m.get("versions") or {}
    calls = redis_calls(m)
    return [f"- Apache mod_auth_openidc: Apache {v.get('apache2', '?')} with mod_auth_openidc {v.get('mod_auth_openidc', '?')} (Debian packages),",
            "  `mpm_event` with Debian's thread settings (StartServers 2, ThreadsPerChild 25, MaxRequestWorkers 150),",
            "  keep-alive without a per-connection request limit, no access log. A relying party of the same Keygate provider",
            "  (`OIDCProviderMetadataURL`, its own DexClient, scope `openid email groups`) with `OIDCSessionType server-cache`",
            "  and `OIDCCacheType redis` on the same Redis (database 1), cache encryption at its default (on), other directives",
            "  at their defaults (claims passed as headers and environment variables; no userinfo or access-token refresh).",
            "  One session made by the module's own sign-in (protected URL, the provider's form, `OIDCRedirectURI` with the",
            "  code and the state cookie), then `wrk` GETs a `<Location>` with `AuthType openid-connect` and `Require valid-user`",
            f"  that serves a 3-byte static file, with the session cookie only ({m.get('non_2xx', 0)} non-2xx). Redis calls per",
            f"  request: {calls} (the session and the cached provider metadata). During it Redis used "
            f"{fmt(m.get('redis_cpu_seconds'), 2)} CPU-s and the provider {fmt(m.get('provider_cpu_seconds'), 2)} CPU-s",
            "  (not counted); Apache's CPU-seconds are those of the parent and all its child processes."]


def paired_limits_note(rs, es):
    runs = [(name, res.get("rounds_limit"), res.get("rounds_per_cpu_second"))
            for name, res in [("RS256 refresh", rs.get("refresh")), ("ES256 refresh", es.get("refresh")),
                              ("rotating refresh", rs.get("refresh_rotating"))] if res]
    runs = [r for r in runs if r[1] and all(r[1]) and r[2] and len(r[2]) == len(r[1])]
    if not runs:
        return ""
    return "\nEach refresh run against the signatures/s of the micro-benchmark runs just before and after it (their mean): " + "; ".join(
        f"{name} " + ", ".join(f"{fmt(x)}/{fmt(lim)} = {pct(x / lim)}" for x, lim in zip(per, lims))
        for name, lims, per in runs) + "."


def median_ratio(a, b):
    """The median of the ratios of runs made back to back (the machine's throughput can shift
    between rounds, which a ratio of medians would mix up); None unless every run has both."""
    if a and b and len(a) == len(b) and all(a) and all(b):
        ratios = sorted(x / y for x, y in zip(a, b))
        return ratios[len(ratios) // 2]
    return None


def limit_ratio(res, lim, key):
    """A figure against its in-process limit: run by run when each run was paired with a run of
    the micro-benchmark, else against the limit measured at the start."""
    if not res:
        return None
    by_run = median_ratio(res.get("rounds_per_cpu_second"), res.get("rounds_limit"))
    return by_run if by_run is not None else ratio(res.get("per_cpu_second"), lim.get(key))


def paired(rs, key):
    """`key` against plain 200, run by run; the ratio of the requests per second for results
    files without rounds."""
    by_run = median_ratio(rs[key].get("rounds_per_cpu_second"), rs["plain_200"].get("rounds_per_cpu_second"))
    return by_run if by_run is not None else ratio(rs[key]["rps"], rs["plain_200"]["rps"])


def rotations_note(m):
    if not m:
        return " (not in this results file)"
    return f" ({fmt(m.get('rotations'))} rotations in the median run, {m.get('non_2xx', 0)} non-2xx)"


def report(r, out_dir, smoke):
    m, lim, rs, es = r["machine"], r["limits"], r["RS256"], r["ES256"]
    rows = []
    def row(name, res, vs_name, vs):
        rows.append(f"| {name} | {fmt(res['rps'])} | {fmt(res.get('per_cpu_second'))} | {fmt(res['p50_ms'], 2)} | {fmt(res['p99_ms'], 2)} | {vs_name} | {pct(vs)} |")
    row("plain 200 (`/healthz`)", rs["plain_200"], "-", None)
    row("discovery", rs["discovery"], "plain 200", paired(rs, "discovery"))
    row("JWKS", rs["jwks"], "plain 200", paired(rs, "jwks"))
    row("refresh grant, RS256", rs["refresh"], "RS256 signatures/core-s", limit_ratio(rs["refresh"], lim, "sign_RS256_per_sec"))
    row("refresh grant, ES256", es["refresh"], "ES256 signatures/core-s", limit_ratio(es["refresh"], lim, "sign_ES256_per_sec"))
    if rs.get("refresh_rotating"):
        row("refresh grant, RS256, rotating (one SQLite write)", rs["refresh_rotating"], "RS256 signatures/core-s", limit_ratio(rs["refresh_rotating"], lim, "sign_RS256_per_sec"))
    row("password login, known user (wrong password)", rs["login_known"], "bcrypt compares/core-s", ratio(rs["login_known"].get("per_cpu_second"), lim.get("bcrypt10_verify_per_sec")))
    row("password login, unknown user", rs["login_unknown"], "bcrypt compares/core-s", ratio(rs["login_unknown"].get("per_cpu_second"), lim.get("bcrypt10_verify_per_sec")))
    cf = rs.get("code_flow")
    if cf:
        row("full authorization-code flow (flows)", cf, "bcrypt compares/core-s", ratio(cf.get("per_cpu_second"), lim.get("bcrypt10_verify_per_sec")))
    else:
        rows.append("| full authorization-code flow (flows) | not measured | | | | bcrypt compares/core-s | n/a |")
    idle, storm = rs["discovery_idle_c8"], rs["discovery_storm_c8"]
    timing = ratio(rs["login_unknown"]["p50_ms"], rs["login_known"]["p50_ms"])
    text = f"""# Benchmarks

{"**Smoke run** (debug build, 1-second runs): the figures only show the harness works." if smoke else ""}
Produced by `bench/run.py` ({r['build']} build, {r['seconds']} s per figure; plain 200, discovery, JWKS and the refresh
grants: {r.get('rounds', 1)} runs of {max(1, r['seconds'] // 2)} s each, in turns, the median counts, and discovery and JWKS are compared
with plain 200 run by run (the median of the three ratios); each refresh run is compared with the mean of the 1.5 s
runs of the signature micro-benchmark just before and after it (the median of the three ratios); the in-process limits below: the median of {r.get('rounds', 1)} runs at the start). Load from `wrk` in a separate process on
127.0.0.1; CPU-seconds read from `/proc/<pid>/stat` of the server process.

**Machine:** {m['cpus']} CPUs ({m['model']}), {m['memory_mib']} MiB, Linux {m['kernel']}. The load generator shares the
CPUs, so absolute requests per second understate the server; the per-CPU-second column does not.

**In-process limits** (same code as the server, one core): RS256 signature {fmt(lim.get('sign_RS256_per_sec'))}/s,
ES256 signature {fmt(lim.get('sign_ES256_per_sec'))}/s, bcrypt cost 10 compare {fmt(lim.get('bcrypt10_verify_per_sec'), 1)}/s.{paired_limits_note(rs, es)}

| workload | requests/s | per CPU-second | p50 ms | p99 ms | compared with | ratio |
| --- | ---: | ---: | ---: | ---: | --- | ---: |
{chr(10).join(rows)}

- The refresh grant rows "RS256" and "ES256" measure the reuse path of one refresh token (docs/configuration.md,
  refresh tokens: one storage read per answer), the case of concurrent refreshes. The "rotating" row presents
  each family's current token outside the reuse window (`reuseInterval: 0s`, bench/rotate.lua: 8 connections,
  a family each per request in flight), the case of kubectl refreshing an expired ID token: a read and one
  compare-and-swap write in SQLite per answer{rotations_note(rs.get("refresh_rotating"))}; a small database
  (the families of {8 * (r.get('rounds', 1) + 2)} logins), all of it in the page cache. Each answer signs **one** JWT:
  the access token is the ID token (Dex signs a second JWT with the same claims as its access token), so
  the ceiling is the one-signature limit. ES256 signatures are so cheap that HTTP, JSON and SQLite
  dominate there.
- Logins answer 401 (wrong password) by design here: every attempt is a full bcrypt compare, limits raised so
  none is refused with 429.
- **Known vs unknown users:** median login time {fmt(rs['login_known']['p50_ms'], 1)} ms vs {fmt(rs['login_unknown']['p50_ms'], 1)} ms
  (ratio {fmt(timing, 2)}): an unknown user costs the same dummy bcrypt compare, so timing reveals nothing.
{code_flow_bullet(r)}
- **Discovery during a login storm** (16 concurrent wrong-password logins): at a steady {fmt(storm['rps'])} req/s
  (`wrk -t1 -c8`, 5 ms between a connection's requests, the same settings idle), p99 {fmt(storm['p99_ms'], 2)} ms vs
  {fmt(idle['p99_ms'], 2)} ms idle ({fmt(ratio(storm['p99_ms'], idle['p99_ms']), 1)}x). bcrypt runs on its own threads
  (cores - 1, at nice 10), so other endpoints keep a core. Saturating closed-loop runs are not used for this figure:
  with the load generator on the same two CPUs their p99 varied from 0.3 ms to 3 ms between identical idle runs.
- Resident memory of the RS256 server after the run: {fmt(rs.get('rss_bytes', 0) / 1048576, 1)} MiB.

{peers_section(r)}

![chart](benchmarks.svg)
"""
    open(os.path.join(out_dir, "BENCHMARKS.md"), "w").write(text)
    bars = [("discovery / plain 200", paired(rs, "discovery")),
            ("JWKS / plain 200", paired(rs, "jwks")),
            ("refresh RS256 / signature limit", limit_ratio(rs["refresh"], lim, "sign_RS256_per_sec")),
            ("refresh ES256 / signature limit", limit_ratio(es["refresh"], lim, "sign_ES256_per_sec")),
            ("rotating refresh RS256 / signature limit", limit_ratio(rs.get("refresh_rotating"), lim, "sign_RS256_per_sec")),
            ("login / bcrypt limit", ratio(rs["login_known"].get("per_cpu_second"), lim.get("bcrypt10_verify_per_sec"))),
            ("code flow / bcrypt limit", ratio((rs.get("code_flow") or {}).get("per_cpu_second"), lim.get("bcrypt10_verify_per_sec")))]
    svg = ['<svg xmlns="http://www.w3.org/2000/svg" width="640" height="%d" font-family="sans-serif" font-size="13">' % (40 + 30 * len(bars)),
           '<text x="10" y="20" font-weight="bold">Keygate: figures as a share of their limit (per CPU-second)</text>']
    for i, (label, v) in enumerate(bars):
        y = 35 + 30 * i
        w = 0 if v is None else min(v, 1.5) * 300
        svg.append(f'<text x="10" y="{y + 15}">{label}</text><rect x="260" y="{y + 3}" width="{w:.0f}" height="16" fill="#4f46e5"/>'
                   f'<line x1="560" y1="{y}" x2="560" y2="{y + 22}" stroke="#999" stroke-dasharray="3"/><text x="{265 + w:.0f}" y="{y + 15}">{pct(v)}</text>')
    op, au = r.get("oidc_provider"), r.get("authenticator")
    peer_bars = []
    if op and au:
        per = lambda x: x.get("per_cpu_second")
        peer_bars = [("discovery / oidc-provider", ratio(per(rs["discovery"]), per(op["discovery"]))),
                     ("JWKS / oidc-provider", ratio(per(rs["jwks"]), per(op["jwks"]))),
                     ("refresh RS256 / oidc-provider", ratio(per(rs["refresh"]), per(op["refresh"]))),
                     ("code flow / oidc-provider", ratio(per(rs.get("code_flow") or {}), per(op.get("code_flow") or {}))),
                     ("auth check / nginx constant 200", ratio(per(au["auth_check"]), per(au["nginx_auth_request"])))]
        top = 35 + 30 * len(bars) + 10
        svg.append(f'<text x="10" y="{top + 15}" font-weight="bold">Keygate per CPU-second as a multiple of the peer\'s (dashed: 1x)</text>')
        scale = 300 / max([2.0] + [v for _, v in peer_bars if v])
        for i, (label, v) in enumerate(peer_bars):
            y = top + 25 + 30 * i
            w = 0 if v is None else v * scale
            svg.append(f'<text x="10" y="{y + 15}">{label}</text><rect x="260" y="{y + 3}" width="{w:.0f}" height="16" fill="#059669"/>'
                       f'<line x1="{260 + scale:.0f}" y1="{y}" x2="{260 + scale:.0f}" y2="{y + 22}" stroke="#999" stroke-dasharray="3"/><text x="{265 + w:.0f}" y="{y + 15}">{fmt(v, 2)}x</text>')
        svg[0] = svg[0].replace('height="%d"' % (40 + 30 * len(bars)), 'height="%d"' % (40 + 30 * len(bars) + 35 + 30 * len(peer_bars)))
    svg.append("</svg>")
    open(os.path.join(out_dir, "benchmarks.svg"), "w").write("\n".join(svg))


if __name__ == "__main__":
    main()
