//! Reverse-proxy mode: authenticated requests go to the upstream, bodies streamed, WebSocket
//! upgrades bridged.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

pub(crate) struct Upstream {
    base: Uri,
    client: Client<HttpConnector, Body>,
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) are never forwarded, except the upgrade handshake.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.get(header::UPGRADE).is_some()
        && headers
            .get(header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    for name in HOP_BY_HOP {
        if keep_upgrade && (name == "connection" || name == "upgrade") {
            continue;
        }
        headers.remove(name);
    }
}

impl Upstream {
    pub fn new(base: &str) -> Result<Self, String> {
        let base: Uri = base.parse().map_err(|e| format!("spec.upstream: {e}"))?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(std::time::Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self { base, client })
    }

    /// Forwards `req` with `identity` headers (client-sent copies already removed by the caller).
    pub async fn forward(
        &self,
        mut req: Request<Body>,
        client_ip: Option<std::net::IpAddr>,
    ) -> Response<Body> {
        let upgrade = is_upgrade(req.headers());
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let base_path = self.base.path().trim_end_matches('/');
        let uri = format!(
            "{}://{}{base_path}{path}",
            self.base.scheme_str().unwrap_or("http"),
            self.base.authority().map_or("", |a| a.as_str())
        );
        let Ok(uri) = uri.parse::<Uri>() else {
            return status(StatusCode::BAD_REQUEST);
        };
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let original_host = req.headers().get(header::HOST).cloned();
        let (mut parts, body) = req.into_parts();
        parts.uri = uri;
        strip_hop_by_hop(&mut parts.headers, upgrade);
        if let Some(ip) = client_ip {
            let forwarded = match parts
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
            {
                Some(prev) => format!("{prev}, {ip}"),
                None => ip.to_string(),
            };
            if let Ok(v) = HeaderValue::from_str(&forwarded) {
                parts
                    .headers
                    .insert(HeaderName::from_static("x-forwarded-for"), v);
            }
        }
        if let Some(host) = original_host {
            parts
                .headers
                .insert(HeaderName::from_static("x-forwarded-host"), host);
        }
        parts.headers.remove(header::HOST);
        let mut resp = match self.client.request(Request::from_parts(parts, body)).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "upstream request failed");
                return status(StatusCode::BAD_GATEWAY);
            }
        };
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_upgrade) = client_upgrade {
                let upstream_upgrade = hyper::upgrade::on(&mut resp);
                tokio::spawn(async move {
                    match (client_upgrade.await, upstream_upgrade.await) {
                        (Ok(client), Ok(upstream)) => {
                            let (mut a, mut b) = (TokioIo::new(client), TokioIo::new(upstream));
                            let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                        }
                        (c, u) => tracing::debug!(
                            client = c.is_ok(),
                            upstream = u.is_ok(),
                            "upgrade failed"
                        ),
                    }
                });
            }
            let (parts, _) = resp.into_parts();
            return Response::from_parts(parts, Body::empty());
        }
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers, false);
        Response::from_parts(parts, Body::new(body))
    }
}

fn status(code: StatusCode) -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = code;
    r
}
