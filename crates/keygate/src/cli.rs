use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Keygate: a Dex-compatible OpenID Connect provider for Kubernetes, configured with the same
/// manifests as Deckhouse's user-authn module (KeygateConfig, User, Group, DexClient).
#[derive(Debug, Parser)]
#[command(name = "keygate", version, propagate_version = true)]
#[command(
    after_help = "Exit codes: 0 success, 1 runtime or configuration error, 2 usage error.\n\
Docs: README.md and docs/ in the source tree."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Kept on one line: a `\` continuation would strip the YAML's indentation.
const LOGIN_HELP: &str = "Used from a kubeconfig (the kubeconfig page offers one):\n  users:\n  - name: me\n    user:\n      exec:\n        apiVersion: client.authentication.k8s.io/v1\n        command: keygate\n        args: [login, --issuer, https://dex.example.com/, --client-id, keygate-login]\n        interactiveMode: IfAvailable\n\nTokens are cached in ~/.kube/cache/keygate (0600); parallel kubectl calls refresh once.\nWith --device the first sign-in works even when kubectl has no terminal: the code is printed on stderr.";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the OpenID Connect provider.
    #[command(
        after_help = "Example:\n  keygate serve --config examples/quickstart.yaml\n\n\
The configuration is one multi-document YAML file or a directory of them (*.yaml, *.yml).\n\
Logs go to stderr; set KEYGATE_LOG (e.g. debug, or keygate_oidc=debug) to change the level.\n\
SIGINT/SIGTERM stop accepting connections and let requests in flight finish."
    )]
    Serve {
        /// Configuration file or directory.
        #[arg(long, short, env = "KEYGATE_CONFIG", value_name = "PATH")]
        config: PathBuf,
        /// Address to listen on; overrides spec.listen (e.g. several processes sharing one
        /// configuration on one host).
        #[arg(long, env = "KEYGATE_LISTEN", value_name = "HOST:PORT")]
        listen: Option<String>,
        /// Log format; overrides spec.logging.format.
        #[arg(long, env = "KEYGATE_LOG_FORMAT", value_parser = ["text", "json"])]
        log_format: Option<String>,
    },
    /// Run the authenticating proxy (DexAuthenticator) in front of one application.
    #[command(
        after_help = "Example:\n  keygate authenticator --config authenticator.yaml\n\n\
The configuration holds one DexAuthenticator manifest (the application, its domain, who may use it)\n\
and one AuthenticatorConfig document (listen address, issuer, secrets, session store, optional upstream).\n\
Put it behind nginx auth_request (/dex-authenticator/auth) or set spec.upstream to proxy in-line."
    )]
    Authenticator {
        /// Configuration file or directory.
        #[arg(long, short, env = "KEYGATE_CONFIG", value_name = "PATH")]
        config: PathBuf,
        /// Address to listen on; overrides spec.listen.
        #[arg(long, env = "KEYGATE_LISTEN", value_name = "HOST:PORT")]
        listen: Option<String>,
        /// Log format; overrides spec.logging.format.
        #[arg(long, env = "KEYGATE_LOG_FORMAT", value_parser = ["text", "json"])]
        log_format: Option<String>,
    },
    /// kubectl credential plugin: prints an ExecCredential with a valid ID token, refreshing or
    /// signing in (browser or device code) as needed.
    #[command(after_help = LOGIN_HELP)]
    Login {
        /// The issuer URL.
        #[arg(long, env = "KEYGATE_ISSUER")]
        issuer: String,
        /// The OAuth2 client (a public client; Keygate's built-in one is keygate-login).
        #[arg(long, default_value = "keygate-login")]
        client_id: String,
        /// For confidential clients (better from the environment than the command line).
        #[arg(long, env = "KEYGATE_CLIENT_SECRET", allow_hyphen_values = true)]
        client_secret: Option<String>,
        #[arg(
            long,
            default_value = "openid profile email groups offline_access audience:server:client_id:kubernetes"
        )]
        scopes: String,
        /// CA bundle for an https issuer with a private CA.
        #[arg(long, value_name = "FILE")]
        ca_file: Option<PathBuf>,
        /// Where tokens are cached (default ~/.kube/cache/keygate).
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
        /// Use the device flow (a code to enter on another device) instead of a browser.
        #[arg(long)]
        device: bool,
        /// Do not open a browser; print the URL (or use the device flow when offered).
        #[arg(long)]
        no_browser: bool,
        /// Loopback port for the browser's redirect (0: any free port).
        #[arg(long, default_value_t = 0)]
        port: u16,
    },
    /// Validate a configuration and explain what it declares. Exits 1 on the first error, naming
    /// the file, the document and the field.
    #[command(
        after_help = "Example:\n  keygate check-config --config /etc/keygate/\n\n\
Prints what the configuration declares (issuer, storage, limits, users with their groups, clients)\n\
and warnings for settings that have no effect here. Secrets are never printed. Also reads what\n\
`serve` reads at start (TLS certificate and key, templates, the SQLite file or its directory),\n\
without creating or changing anything or contacting a server. A `keygate authenticator`\n\
configuration (DexAuthenticator + AuthenticatorConfig) is checked the same way."
    )]
    CheckConfig {
        /// Configuration file or directory.
        #[arg(long, short, env = "KEYGATE_CONFIG", value_name = "PATH")]
        config: PathBuf,
    },
    /// List users with their groups, expiry and lock state; lock and unlock them.
    #[command(subcommand)]
    Users(UsersCommand),
    /// List OAuth2 clients; show a client secret Keygate generated.
    #[command(subcommand)]
    Clients(ClientsCommand),
    /// List or revoke sessions (refresh-token families) in the configured storage.
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Read a password on stdin and print a bcrypt hash for User.spec.password.
    #[command(
        after_help = "Example:\n  echo -n 'correct horse' | keygate hash-password\n\n\
On a terminal it asks for the password twice, without echo.\n\
The hash works in Deckhouse User manifests and Dex staticPasswords alike."
    )]
    HashPassword {
        /// bcrypt cost (10 to 16; each step doubles the time of every login).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(10..=16))]
        cost: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// List live sessions: one per login with offline_access (kubeconfig, device, browser).
    List {
        /// Configuration file or directory (for the storage settings).
        #[arg(long, short, env = "KEYGATE_CONFIG", value_name = "PATH")]
        config: PathBuf,
        /// Only this user's sessions (email or User name).
        #[arg(long)]
        user: Option<String>,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke sessions: the refresh tokens stop working at once (ID tokens already issued stay
    /// valid until they expire, idTokenTTL).
    #[command(group(clap::ArgGroup::new("which").required(true).args(["id", "user"])))]
    Revoke {
        /// Configuration file or directory (for the storage settings).
        #[arg(long, short, env = "KEYGATE_CONFIG", value_name = "PATH")]
        config: PathBuf,
        /// The session id (first column of `sessions list`). Ids may start with `-`.
        #[arg(long, allow_hyphen_values = true)]
        id: Option<String>,
        /// Every session of this user (email or User name).
        #[arg(long)]
        user: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Static users from the manifests, with their groups, expiry and lock state.
    List {
        /// Configuration file or directory.
        #[arg(long, short, env = "KEYGATE_CONFIG", value_name = "PATH")]
        config: PathBuf,
    },
    /// Lock a user: logins and refreshes are refused (ID tokens already issued live out idTokenTTL).
    Lock {
        /// Configuration file or directory.
        #[arg(long, short, env = "KEYGATE_CONFIG", value_name = "PATH")]
        config: PathBuf,
        /// The user's email or User name.
        user: String,
        /// How long, e.g. 30m, 12h, 7d; without it, until `keygate users unlock`.
        #[arg(long = "for", value_name = "DURATION")]
        duration: Option<String>,
    },
    /// Unlock a user (administrator or lockout lock) and reset the failed-login streak.
    Unlock {
        /// Configuration file or directory.
        #[arg(long, short, env = "KEYGATE_CONFIG", value_name = "PATH")]
        config: PathBuf,
        /// The user's email or User name.
        user: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClientsCommand {
    /// Every client: DexClient manifests and the built-in ones.
    List {
        /// Configuration file or directory.
        #[arg(long, short, env = "KEYGATE_CONFIG", value_name = "PATH")]
        config: PathBuf,
    },
    /// Print the secret of a client: the one in its manifest, or the one Keygate generated for a
    /// DexClient that declares none (after the first `keygate serve`).
    Secret {
        /// Configuration file or directory.
        #[arg(long, short, env = "KEYGATE_CONFIG", value_name = "PATH")]
        config: PathBuf,
        /// The client id, e.g. dex-client-grafana@monitoring.
        client_id: String,
    },
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn session_ids_may_start_with_a_hyphen() {
        // Ids are base64url: about one in 32 starts with `-`, as copied from `sessions list`.
        let cli = Cli::try_parse_from([
            "keygate", "sessions", "revoke", "--config", "k.yaml", "--id", "-nQx3",
        ])
        .unwrap();
        match cli.command {
            Command::Sessions(SessionsCommand::Revoke { id, .. }) => {
                assert_eq!(id.as_deref(), Some("-nQx3"))
            }
            other => panic!("{other:?}"),
        }
        // Generated client secrets are base64url too.
        let cli = Cli::try_parse_from([
            "keygate",
            "login",
            "--issuer",
            "https://dex.example.com/",
            "--client-secret",
            "-s3cret",
        ])
        .unwrap();
        match cli.command {
            Command::Login { client_secret, .. } => {
                assert_eq!(client_secret.as_deref(), Some("-s3cret"))
            }
            other => panic!("{other:?}"),
        }
    }
}
