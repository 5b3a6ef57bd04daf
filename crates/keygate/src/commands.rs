use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use keygate_config::{Config, StorageConfig};
use keygate_oidc::SystemClock;
use keygate_server::{AppState, Pages, build_provider, check_tls, metrics_router, router, serve};

use crate::cli::{Cli, ClientsCommand, Command, SessionsCommand, UsersCommand};
use crate::logging;

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve {
            config,
            listen,
            log_format,
        } => {
            let mut config = keygate_config::load(&config)?;
            if let Some(listen) = listen {
                config.provider.listen = listen;
            }
            let json = match log_format.as_deref() {
                Some(f) => f == "json",
                None => config.provider.logging.json,
            };
            logging::init(&config.provider.logging.level, json);
            runtime()?.block_on(serve_provider(config))
        }
        Command::Authenticator {
            config,
            listen,
            log_format,
        } => {
            let mut settings = keygate_config::load_authenticator(&config)?;
            if let Some(listen) = listen {
                settings.listen = listen;
            }
            let json = match log_format.as_deref() {
                Some(f) => f == "json",
                None => settings.logging.json,
            };
            logging::init(&settings.logging.level, json);
            runtime()?.block_on(serve_authenticator(settings))
        }
        Command::CheckConfig { config } => check_config(&config),
        Command::Login {
            issuer,
            client_id,
            client_secret,
            scopes,
            ca_file,
            cache_dir,
            device,
            no_browser,
            port,
        } => {
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            let args = crate::login::LoginArgs {
                issuer,
                client_id,
                client_secret,
                scopes,
                ca_file,
                cache_dir,
                device,
                no_browser,
                port,
            };
            runtime()?.block_on(crate::login::run(args))
        }
        Command::HashPassword { cost } => hash_password(cost),
        Command::Sessions(cmd) => runtime()?.block_on(sessions(cmd)),
        Command::Users(cmd) => runtime()?.block_on(users(cmd)),
        Command::Clients(cmd) => runtime()?.block_on(clients(cmd)),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn storage_label(s: &StorageConfig) -> String {
    match s {
        StorageConfig::Memory => "memory (lost on restart)".into(),
        StorageConfig::Sqlite { path } => format!("sqlite {}", path.display()),
        StorageConfig::Postgres { .. } => "postgres".into(),
    }
}

async fn serve_provider(config: Config) -> Result<()> {
    // One TLS crypto provider for the whole process (see RECIPES.md).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    own_metrics_address(
        &config.provider.listen,
        config.provider.metrics_listen.as_deref(),
    )?;
    // The certificate and key before anything else: a bad file must stop the start.
    let tls = match &config.provider.tls {
        Some(files) => Some(keygate_server::load_tls(files).map_err(tls_error)?),
        None => None,
    };
    // Take the port first: a second instance must fail before it touches storage.
    let listener = tokio::net::TcpListener::bind(&config.provider.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.provider.listen))?;
    let metrics_listener = bind_metrics(config.provider.metrics_listen.as_deref()).await?;
    let built = build_provider(&config, Arc::new(SystemClock))
        .await
        .context("cannot start the provider")?;
    let provider = Arc::new(built.provider);
    let settings = provider.settings().clone();
    let pages = Pages::new(
        &settings.frontend,
        &settings.issuer,
        provider.endpoint("static/"),
    )
    .map_err(anyhow::Error::msg)
    .context("cannot load the page templates")?;
    let state = AppState::new(provider.clone(), Arc::new(pages));
    let local = listener.local_addr()?;

    let maintenance = {
        let provider = provider.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            loop {
                tick.tick().await;
                match provider.maintain().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(deleted = n, "garbage-collected expired objects"),
                    Err(e) => {
                        tracing::error!(error = %e, "maintenance failed (key rotation / garbage collection)")
                    }
                }
            }
        })
    };

    let metrics_local = match &metrics_listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    banner(
        &config,
        &provider,
        local,
        metrics_local,
        &built.generated_secrets,
    );
    let metrics = serve_metrics(metrics_listener, metrics_router(state.clone()));
    let main = serve(listener, router(state.clone()), tls, shutdown_signal());
    // Either server failing stops the other: no process that answers /metrics only.
    tokio::try_join!(main, metrics)?;
    maintenance.abort();
    provider.store().close().await;
    tracing::info!("stopped");
    Ok(())
}

fn banner(
    config: &Config,
    provider: &keygate_oidc::Provider,
    local: std::net::SocketAddr,
    metrics: Option<std::net::SocketAddr>,
    generated: &[String],
) {
    let s = provider.settings();
    let scheme = if s.tls.is_some() { "https" } else { "http" };
    let mut lines = vec![
        format!("Keygate {} is running", env!("CARGO_PKG_VERSION")),
        format!("  issuer      {}", s.issuer),
        format!(
            "  discovery   {}",
            provider.endpoint(".well-known/openid-configuration")
        ),
        format!("  listening   {scheme}://{local}"),
        match metrics {
            Some(m) => format!("  metrics     http://{m}/metrics"),
            None => format!("  metrics     {}", provider.endpoint("metrics")),
        },
        format!("  storage     {}", storage_label(&s.storage)),
        format!(
            "  users       {} static, {} client(s)",
            config.users.len(),
            config.clients.len()
        ),
    ];
    if s.demo {
        lines.push(format!(
            "  try it      {}   (a demo sign-in page)",
            provider.endpoint("demo")
        ));
    }
    for id in generated {
        lines.push(format!(
            "  generated a secret for client {id}; it is kept in storage"
        ));
    }
    eprintln!("\n{}\n", lines.join("\n"));
}

async fn serve_authenticator(settings: keygate_config::AuthenticatorSettings) -> Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    for w in &settings.warnings {
        tracing::warn!("{w}");
    }
    own_metrics_address(&settings.listen, settings.metrics_listen.as_deref())?;
    let listener = tokio::net::TcpListener::bind(&settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let local = listener.local_addr()?;
    let a = &settings.authenticator;
    let mut lines = vec![
        format!(
            "Keygate {} authenticator is running",
            env!("CARGO_PKG_VERSION")
        ),
        format!("  client      {}", a.client_id),
        format!("  issuer      {}", settings.issuer),
        format!(
            "  listening   http://{local}  (nginx auth_request: http://{local}/dex-authenticator/auth)"
        ),
    ];
    for app in &a.applications {
        lines.push(format!(
            "  application https://{}/  (callback https://{}/dex-authenticator/callback)",
            app.domain, app.domain
        ));
    }
    lines.push(format!(
        "  sessions    {}",
        match &settings.session_store {
            keygate_config::SessionStoreConfig::Memory => "memory (this process only)".to_string(),
            keygate_config::SessionStoreConfig::Redis { .. } => "redis".to_string(),
        }
    ));
    if let Some(u) = &settings.upstream {
        lines.push(format!("  upstream    {u}  (reverse-proxy mode)"));
    }
    let metrics_listener = bind_metrics(settings.metrics_listen.as_deref()).await?;
    match &metrics_listener {
        Some(l) => lines.push(format!("  metrics     http://{}/metrics", l.local_addr()?)),
        None if settings.upstream.is_none() => {
            lines.push(format!("  metrics     http://{local}/metrics"));
        }
        None => {}
    }
    let state = keygate_authenticator::build_state(settings, Arc::new(SystemClock))
        .map_err(anyhow::Error::msg)?;
    eprintln!("\n{}\n", lines.join("\n"));
    let metrics = serve_metrics(
        metrics_listener,
        keygate_authenticator::metrics_router(state.clone()),
    );
    let main = serve(
        listener,
        keygate_authenticator::router(state.clone()),
        None,
        shutdown_signal(),
    );
    tokio::try_join!(main, metrics)?;
    tracing::info!("stopped");
    Ok(())
}

/// `spec.metricsListen` must differ from the listen address (`--listen` included).
fn own_metrics_address(listen: &str, metrics: Option<&str>) -> Result<()> {
    if metrics == Some(listen) {
        bail!(
            "spec.metricsListen is the listen address ({listen}): give /metrics an address of its own, or leave it out"
        );
    }
    Ok(())
}

/// The `spec.metricsListen` socket, taken at start like the main one.
async fn bind_metrics(addr: Option<&str>) -> Result<Option<tokio::net::TcpListener>> {
    match addr {
        Some(addr) => Ok(Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (spec.metricsListen)"))?,
        )),
        None => Ok(None),
    }
}

/// The metrics server, if there is a metrics socket; it stops with the main one, quietly.
async fn serve_metrics(
    listener: Option<tokio::net::TcpListener>,
    app: keygate_server::Router,
) -> Result<(), keygate_server::ServeError> {
    match listener {
        Some(l) => serve(l, app, None, signal_received()).await,
        None => Ok(()),
    }
}

/// A certificate or key problem, named by its field.
fn tls_error(e: keygate_server::ServeError) -> anyhow::Error {
    match e {
        keygate_server::ServeError::Tls(m) => anyhow::anyhow!("spec.tls: {m}"),
        e => anyhow::anyhow!("spec.tls: {e}"),
    }
}

/// SIGINT or SIGTERM, logged once (the metrics server waits for it quietly).
async fn shutdown_signal() {
    signal_received().await;
    tracing::info!("shutting down: no new connections, finishing requests in flight");
}

async fn signal_received() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

fn check_config(path: &std::path::Path) -> Result<()> {
    let kinds = keygate_config::document_kinds(path)?;
    let has = |k: &str| kinds.iter().any(|x| x == k);
    let authenticator = has("AuthenticatorConfig");
    if authenticator {
        check_authenticator_config(path)?;
        if !has("KeygateConfig") && !has("ModuleConfig") {
            return Ok(());
        }
    }
    let config = keygate_config::load(path)?;
    let p = &config.provider;
    // What `serve` reads only at start, read now: a broken certificate or template must not
    // wait for the deployment to show.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let tls = match &p.tls {
        Some(files) => {
            let chain = check_tls(files).map_err(tls_error)?;
            Some(format!(
                "{} ({chain} certificate{}), key {}",
                files.cert_file.display(),
                if chain == 1 { "" } else { "s" },
                files.key_file.display()
            ))
        }
        None => None,
    };
    Pages::new(&p.frontend, &p.issuer, "static/".into())
        .map_err(anyhow::Error::msg)
        .context("cannot load the page templates")?;
    let storage = storage_status(&p.storage)?;
    own_metrics_address(&p.listen, p.metrics_listen.as_deref())?;
    let files = config.sources.len();
    out!(
        "configuration OK ({files} file{})",
        if files == 1 { "" } else { "s" }
    );
    out!("  issuer         {}", p.issuer);
    out!(
        "  listen         {}{}",
        p.listen,
        if p.tls.is_some() { " (TLS)" } else { "" }
    );
    if let Some(tls) = tls {
        out!("  TLS            {tls}");
    }
    if let Some(m) = &p.metrics_listen {
        out!("  metrics        http://{m}/metrics (not on the listen address)");
    }
    out!("  storage        {}{storage}", storage_label(&p.storage));
    if let Some(dir) = &p.frontend.templates_dir {
        out!("  templates      {} (and the embedded ones)", dir.display());
    }
    out!(
        "  signing        {} keys, rotated every {}s",
        p.signing.algorithm.as_str(),
        p.signing.rotation_period
    );
    out!("  idTokenTTL     {}s", p.id_token_ttl);
    let r = p.refresh;
    let opt = |v: Option<i64>| v.map_or_else(|| "never".to_string(), |s| format!("{s}s"));
    out!(
        "  refresh tokens reuseInterval {}s, validIfNotUsedFor {}, absoluteLifetime {}, rotation {}",
        r.reuse_interval,
        opt(r.valid_if_not_used_for),
        opt(r.absolute_lifetime),
        if r.disable_rotation { "off" } else { "on" }
    );
    if r.revoke_on_reuse || r.max_sessions_per_client.is_some() {
        out!(
            "                 revokeOnReuse {}, maxSessionsPerClient {}",
            r.revoke_on_reuse,
            r.max_sessions_per_client
                .map_or_else(|| "unlimited".to_string(), |n| n.to_string())
        );
    }
    let b = &p.brute_force;
    out!(
        "  brute force    {} attempts per user, one more every {}s; {} failures per address, one more every {}s; {} trusted prox{}",
        b.attempts,
        b.refill_every,
        b.per_ip_attempts,
        b.per_ip_refill_every,
        b.trusted_proxies.len(),
        if b.trusted_proxies.len() == 1 {
            "y"
        } else {
            "ies"
        }
    );
    match p.lockout {
        Some(l) => out!(
            "  lockout        after {} failed logins in a row, for {}s",
            l.max_attempts,
            l.lock_duration
        ),
        None => out!("  lockout        off"),
    }
    out!("  users          {}", config.users.len());
    for u in &config.users {
        out!(
            "    {} <{}> groups: [{}]",
            u.name,
            u.email,
            u.groups.join(", ")
        );
    }
    out!("  clients        {}", config.clients.len());
    for c in &config.clients {
        let kind = client_kind(c);
        let kube = if c.allow_access_to_kubernetes {
            ", may request audience kubernetes"
        } else {
            ""
        };
        out!(
            "    {} ({kind}{kube}) redirect URIs: {}",
            c.id,
            c.redirect_uris.len()
        );
    }
    let mut builtin: Vec<_> = keygate_server::builtin_clients(&config)
        .into_iter()
        .map(|c| c.id)
        .collect();
    builtin.push(format!(
        "{} (audience of kube-apiserver)",
        keygate_oidc::KUBERNETES_CLIENT_ID
    ));
    out!("  built-in       {}", builtin.join(", "));
    out!("  providers      {}", config.connectors.len());
    for c in &config.connectors {
        out!(
            "    {} ({}) \"{}\"",
            c.id,
            connector_kind(&c.kind),
            c.display_name
        );
    }
    if let Some(dir) = &p.frontend.templates_dir {
        for name in keygate_server::unknown_templates(dir) {
            out!(
                "warning: spec.frontend.templatesDir: {name} is not one of Keygate's templates and is not used"
            );
        }
    }
    for w in &config.warnings {
        out!("warning: {w}");
    }
    Ok(())
}

/// How a DexProvider is described in check-config's summary.
fn connector_kind(kind: &keygate_config::ConnectorKind) -> String {
    use keygate_config::ConnectorKind as K;
    match kind {
        K::Ldap(_) => "LDAP".into(),
        K::Oidc(o) if !o.send_nonce => format!("OIDC {}, sendNonce false", o.issuer),
        K::Oidc(o) => format!("OIDC {}", o.issuer),
        K::Github(_) => "GitHub".into(),
        K::Gitlab(_) => "GitLab".into(),
        K::Bitbucket(_) => "Bitbucket Cloud".into(),
        K::Crowd(_) => "Crowd".into(),
    }
}

/// Whether `serve` will find its database, without creating or changing it: an existing SQLite
/// file must open for reading and writing, a new one needs its directory. PostgreSQL is not
/// contacted.
fn storage_status(s: &StorageConfig) -> Result<&'static str> {
    match s {
        StorageConfig::Memory => Ok(""),
        StorageConfig::Postgres { .. } => Ok(" (not contacted by check-config)"),
        StorageConfig::Sqlite { path } if path.as_os_str().is_empty() => {
            bail!("spec.storage.path is empty")
        }
        StorageConfig::Sqlite { path } if path.exists() => {
            if !path.is_file() {
                bail!("spec.storage.path: {} is not a file", path.display());
            }
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .with_context(|| {
                    format!(
                        "spec.storage.path: cannot open {} for reading and writing",
                        path.display()
                    )
                })?;
            // An empty file is what `serve` creates before the schema: fine. Anything else must
            // start with SQLite's header.
            let mut head = [0u8; 16];
            let n = file.read(&mut head).unwrap_or(0);
            if n > 0 && head[..n] != b"SQLite format 3\0"[..n] {
                bail!(
                    "spec.storage.path: {} is not a SQLite database",
                    path.display()
                );
            }
            Ok(" (exists)")
        }
        StorageConfig::Sqlite { path } => {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => std::path::Path::new("."),
            };
            if !dir.is_dir() {
                bail!(
                    "spec.storage.path: the directory {} of {} does not exist",
                    dir.display(),
                    path.display()
                );
            }
            Ok(" (created at the first start)")
        }
    }
}

/// A `keygate authenticator` configuration (DexAuthenticator + AuthenticatorConfig).
fn check_authenticator_config(path: &std::path::Path) -> Result<()> {
    let a = keygate_config::load_authenticator(path)?;
    // Everything `keygate authenticator` builds before it listens (CA files, templates, the
    // upstream address), without connecting to Redis or the provider.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    keygate_authenticator::build_state(a.clone(), Arc::new(SystemClock))
        .map_err(anyhow::Error::msg)?;
    let spec = &a.authenticator;
    out!("authenticator configuration OK");
    out!("  DexAuthenticator {}/{}", spec.namespace, spec.name);
    out!("  client         {}", spec.client_id);
    out!("  issuer         {}", a.issuer);
    out!("  listen         {}", a.listen);
    for app in &spec.applications {
        out!(
            "  application    https://{}{}",
            app.domain,
            if app.whitelist.is_empty() {
                String::new()
            } else {
                format!(" (from {} address range(s) only)", app.whitelist.len())
            }
        );
    }
    let store = match &a.session_store {
        keygate_config::SessionStoreConfig::Memory => "memory (sessions end with the process)",
        keygate_config::SessionStoreConfig::Redis { .. } => "redis",
    };
    out!(
        "  sessions       {store}, kept {}s",
        spec.keep_users_logged_in_for
    );
    out!(
        "  mode           {}",
        a.upstream.as_deref().map_or_else(
            || "nginx auth_request".to_string(),
            |u| format!("reverse proxy to {u}")
        )
    );
    if let Some(m) = &a.metrics_listen {
        out!("  metrics        http://{m}/metrics");
    }
    if let Some(ca) = &a.issuer_ca_file {
        out!("  issuer CA      {}", ca.display());
    }
    if let Some(dir) = &a.frontend.templates_dir {
        out!("  templates      {} (and the embedded ones)", dir.display());
        for name in keygate_server::unknown_templates(dir) {
            out!(
                "warning: spec.frontend.templatesDir: {name} is not one of Keygate's templates and is not used"
            );
        }
    }
    for w in &a.warnings {
        out!("warning: {w}");
    }
    Ok(())
}

fn hash_password(cost: u32) -> Result<()> {
    use std::io::IsTerminal;
    let password = if std::io::stdin().is_terminal() {
        // Interactive: ask twice, without echo.
        let first = rpassword::prompt_password("Password: ").context("cannot read the password")?;
        let again = rpassword::prompt_password("Again: ").context("cannot read the password")?;
        if first != again {
            bail!("the two passwords differ");
        }
        first
    } else {
        let mut input = String::new();
        std::io::stdin()
            .read_to_string(&mut input)
            .context("cannot read the password from stdin")?;
        let line = input
            .strip_suffix('\n')
            .map(|p| p.strip_suffix('\r').unwrap_or(p))
            .unwrap_or(&input);
        line.to_owned()
    };
    if password.is_empty() {
        bail!(
            "empty password: pipe the password on stdin, e.g. `echo -n 'secret' | keygate hash-password`"
        );
    }
    if password.len() > 72 {
        bail!("bcrypt uses only the first 72 bytes of a password; use a shorter one");
    }
    out!("{}", bcrypt::hash(password, cost)?);
    Ok(())
}

async fn open_configured_store(path: &std::path::Path) -> Result<keygate_store::Store> {
    let config = keygate_config::load(path)?;
    store_of(&config).await
}

async fn store_of(config: &Config) -> Result<keygate_store::Store> {
    if config.provider.storage == StorageConfig::Memory {
        bail!(
            "the configuration uses memory storage: sessions live only inside the running `keygate serve`"
        );
    }
    Ok(keygate_server::open_store(&config.provider.storage, false).await?)
}

fn time_label(t: Option<i64>) -> String {
    t.map_or_else(|| "never".into(), |t| t.to_string())
}

async fn sessions(cmd: SessionsCommand) -> Result<()> {
    use keygate_oidc::{Clock, sessions};
    let now = SystemClock.now();
    match cmd {
        SessionsCommand::List { config, user, json } => {
            let store = open_configured_store(&config).await?;
            let list = sessions::list(&store, user.as_deref(), now).await?;
            if json {
                for s in &list {
                    out!("{}", serde_json::to_string(s)?);
                }
                return Ok(());
            }
            out!(
                "{:<24} {:<28} {:<32} {:<12} {:<12} EXPIRES",
                "ID",
                "USER",
                "CLIENT",
                "CREATED",
                "LAST USED"
            );
            for s in &list {
                out!(
                    "{:<24} {:<28} {:<32} {:<12} {:<12} {}",
                    s.id,
                    s.email,
                    s.client_id,
                    s.created_at,
                    s.last_used,
                    time_label(s.expires_at)
                );
            }
            out!("{} session(s); times are unix seconds", list.len());
        }
        SessionsCommand::Revoke { config, id, user } => {
            let store = open_configured_store(&config).await?;
            if let Some(id) = id {
                if !sessions::revoke_id(&store, &id).await? {
                    bail!("no session {id}");
                }
                out!("revoked session {id}");
            }
            if let Some(user) = user {
                let n = sessions::revoke_user(&store, &user).await?;
                out!("revoked {n} session(s) of {user}");
            }
        }
    }
    Ok(())
}

async fn users(cmd: UsersCommand) -> Result<()> {
    use keygate_oidc::{Clock, LOCAL_CONNECTOR, accounts};
    use keygate_store::model::UserState;
    let now = SystemClock.now();
    let (path, user) = match &cmd {
        UsersCommand::List { config } => (config.clone(), None),
        UsersCommand::Lock { config, user, .. } | UsersCommand::Unlock { config, user } => {
            (config.clone(), Some(user.clone()))
        }
    };
    let path = &path;
    let config = keygate_config::load(path)?;
    let store = store_of(&config).await?;
    let find = |who: &str| {
        config
            .users
            .iter()
            .find(|u| u.email.eq_ignore_ascii_case(who) || u.name == who)
            .ok_or_else(|| {
                anyhow::anyhow!("no User with email or name {who:?} in the configuration")
            })
    };
    match cmd {
        UsersCommand::List { .. } => {
            let users = accounts::expiry_view(&store, LOCAL_CONNECTOR, &config.users).await?;
            out!(
                "{:<20} {:<32} {:<24} {:<12} LOCK",
                "NAME",
                "EMAIL",
                "GROUPS",
                "EXPIRES"
            );
            for u in &users {
                let state = store
                    .get::<UserState>(&UserState::id_for(LOCAL_CONNECTOR, &u.name))
                    .await?;
                let lock = match state {
                    Some(s) if s.locked_at(now) => format!(
                        "locked ({}) until {}",
                        s.lock_reason.unwrap_or_default(),
                        s.locked_until
                            .filter(|u| *u != i64::MAX)
                            .map_or_else(|| "unlocked by hand".into(), |u| u.to_string())
                    ),
                    Some(s) if s.failed_streak > 0 => {
                        format!("{} failed in a row", s.failed_streak)
                    }
                    _ => "-".into(),
                };
                let expired = u.expires_at.is_some_and(|e| e <= now);
                let expires = u.expires_at.map_or_else(
                    || "never".into(),
                    |e| {
                        if expired {
                            format!("{e} (expired)")
                        } else {
                            e.to_string()
                        }
                    },
                );
                out!(
                    "{:<20} {:<32} {:<24} {:<12} {lock}",
                    u.name,
                    u.email,
                    u.groups.join(","),
                    expires
                );
            }
            out!("{} user(s); times are unix seconds", users.len());
        }
        UsersCommand::Lock { duration, .. } => {
            let u = find(user.as_deref().unwrap_or_default())?;
            let until = match duration {
                Some(d) => Some(
                    now + keygate_config::parse_duration(&d, true)
                        .map_err(anyhow::Error::msg)?
                        .as_secs() as i64,
                ),
                None => None,
            };
            accounts::lock(
                &store,
                &UserState::id_for(LOCAL_CONNECTOR, &u.name),
                now,
                until,
            )
            .await?;
            match until {
                Some(t) => out!("locked {} until {t} (unix seconds)", u.email),
                None => out!("locked {} until unlocked", u.email),
            }
        }
        UsersCommand::Unlock { .. } => {
            let u = find(user.as_deref().unwrap_or_default())?;
            accounts::unlock(&store, &UserState::id_for(LOCAL_CONNECTOR, &u.name), now).await?;
            out!("unlocked {}", u.email);
        }
    }
    Ok(())
}

async fn clients(cmd: ClientsCommand) -> Result<()> {
    use keygate_store::model::GeneratedClientSecret;
    match cmd {
        ClientsCommand::List { config } => {
            let config = keygate_config::load(&config)?;
            out!("{:<44} {:<14} {:<6} REDIRECT URIS", "ID", "TYPE", "K8S");
            let builtin = keygate_server::builtin_clients(&config);
            for c in config.clients.iter().chain(&builtin) {
                let kind = if builtin.iter().any(|b| b.id == c.id) {
                    "built-in"
                } else {
                    client_kind(c)
                };
                let kube = if c.allow_access_to_kubernetes {
                    "yes"
                } else {
                    "-"
                };
                out!(
                    "{:<44} {:<14} {:<6} {}",
                    c.id,
                    kind,
                    kube,
                    if c.redirect_uris.is_empty() && c.public {
                        "(any loopback address; device flow)".to_string()
                    } else {
                        c.redirect_uris.join(" ")
                    }
                );
            }
            out!(
                "{:<44} {:<14} {:<6} (built-in audience of kube-apiserver)",
                keygate_oidc::KUBERNETES_CLIENT_ID,
                "audience",
                "-"
            );
        }
        ClientsCommand::Secret { config, client_id } => {
            let config = keygate_config::load(&config)?;
            let spec = config
                .clients
                .iter()
                .find(|c| c.id == client_id || c.legacy_id.as_deref() == Some(client_id.as_str()))
                .ok_or_else(|| {
                    anyhow::anyhow!("no DexClient with id {client_id:?} in the configuration")
                })?;
            if spec.public {
                bail!("{} is a public client: it has no secret", spec.id);
            }
            if let Some(secret) = &spec.secret {
                out!("{}", secret.expose());
                return Ok(());
            }
            let store = store_of(&config).await?;
            match store.get::<GeneratedClientSecret>(&spec.id).await? {
                Some(s) => out!("{}", s.secret),
                None => bail!(
                    "no secret was generated for {} yet: start `keygate serve` once",
                    spec.id
                ),
            }
        }
    }
    Ok(())
}

fn client_kind(c: &keygate_config::ClientSpec) -> &'static str {
    match (c.public, c.secret.is_some()) {
        (true, _) => "public",
        (false, true) => "confidential",
        (false, false) => "confidential (generated secret)",
    }
}
