//! Listening: plain HTTP or TLS (rustls with aws-lc-rs), with graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use keygate_config::TlsFiles;
use tokio::net::TcpListener;
use tower::ServiceExt;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The TLS configuration from the certificate and key files; read at start, before the banner,
/// so that a bad file stops the process before it reports itself running.
pub fn load_tls(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, ServeError> {
    tls_config(files).map(|(config, _)| Arc::new(config))
}

/// Reads and parses the certificate and key as `serve` will (for `keygate check-config`); the
/// number of certificates in the chain.
pub fn check_tls(files: &TlsFiles) -> Result<usize, ServeError> {
    tls_config(files).map(|(_, chain)| chain)
}

/// The configuration, and the length of the certificate chain it serves.
fn tls_config(files: &TlsFiles) -> Result<(rustls::ServerConfig, usize), ServeError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| ServeError::Tls(format!("cannot read {}: {e}", p.display())))
    };
    let cert_pem = read(&files.cert_file)?;
    let key_pem = read(&files.key_file)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| ServeError::Tls(format!("{}: {e}", files.cert_file.display())))?;
    let chain = certs.len();
    if chain == 0 {
        return Err(ServeError::Tls(format!(
            "{}: no certificate found",
            files.cert_file.display()
        )));
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| ServeError::Tls(format!("{}: {e}", files.key_file.display())))?
        .ok_or_else(|| {
            let text = String::from_utf8_lossy(&key_pem);
            ServeError::Tls(
                if text.contains("ENCRYPTED PRIVATE KEY") || text.contains("Proc-Type: 4,ENCRYPTED") {
                    format!(
                        "{}: the private key is encrypted; Keygate needs it unencrypted \
                         (`openssl pkey -in KEY -out KEY.plain`, then restrict the file to Keygate's user)",
                        files.key_file.display()
                    )
                } else {
                    format!("{}: no private key found", files.key_file.display())
                },
            )
        })?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => ServeError::Tls(format!(
                "the key {} does not belong to the certificate {}",
                files.key_file.display(),
                files.cert_file.display()
            )),
            e => ServeError::Tls(format!(
                "{} and {}: {e}",
                files.cert_file.display(),
                files.key_file.display()
            )),
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((config, chain))
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let Some(tls) = tls else {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await?;
        return Ok(());
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let acceptor = acceptor.clone();
        // The peer address, as axum's ConnectInfo extractor expects it.
        let service = TowerToHyperService::new(app.clone().map_request(
            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                req
            },
        ));
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(
                std::time::Duration::from_secs(10),
                acceptor.accept(stream),
            )
            .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(std::time::Duration::from_secs(20)) => {
            tracing::warn!("connections still open after 20 s; closing them");
        }
    }
    Ok(())
}
