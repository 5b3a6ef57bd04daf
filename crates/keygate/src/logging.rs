use tracing_subscriber::EnvFilter;

/// Text (default) or JSON logs on stderr. `KEYGATE_LOG` overrides the configured level with any
/// `tracing` filter directive.
pub fn init(level: &str, json: bool) {
    let filter = std::env::var("KEYGATE_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(format!("{level},sqlx=warn,hyper=warn")).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}
