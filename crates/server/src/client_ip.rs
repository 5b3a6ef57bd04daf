//! The client's address: the TCP peer, or what a trusted proxy says in `X-Forwarded-For` /
//! `X-Real-IP`. Headers from anyone else are ignored (they are trivially forged).

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::HeaderMap;
use keygate_config::IpNet;

pub fn client_ip(
    peer: Option<&ConnectInfo<SocketAddr>>,
    headers: &HeaderMap,
    trusted: &[IpNet],
) -> Option<IpAddr> {
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let real_ip = headers.get("x-real-ip").and_then(|v| v.to_str().ok());
    Some(keygate_config::resolve_client_ip(
        peer?.0.ip(),
        &forwarded,
        real_ip,
        trusted,
    ))
}

/// Extractor: the client's address as [`client_ip`] resolves it (`None` without a TCP peer).
pub struct ClientIp(pub Option<IpAddr>);

impl axum::extract::FromRequestParts<crate::AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &crate::AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>();
        Ok(ClientIp(client_ip(
            peer,
            &parts.headers,
            &state.trusted_proxies,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                *k,
                v.parse()
                    .unwrap_or_else(|_| axum::http::HeaderValue::from_static("")),
            );
        }
        h
    }

    fn peer(ip: &str) -> ConnectInfo<SocketAddr> {
        ConnectInfo(SocketAddr::new(
            ip.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
            1234,
        ))
    }

    #[test]
    fn only_trusted_proxies_are_believed() {
        let trusted = vec![IpNet::parse("10.0.0.0/8").unwrap_or_else(|e| panic!("{e}"))];
        let xff = headers(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.7")]);
        let ip = |s: &str| s.parse::<IpAddr>().ok();
        // From an untrusted peer, headers are ignored.
        assert_eq!(
            client_ip(Some(&peer("8.8.8.8")), &xff, &trusted),
            ip("8.8.8.8")
        );
        // From a proxy: the rightmost untrusted hop (6.6.6.6 may be forged by 1.2.3.4).
        assert_eq!(
            client_ip(Some(&peer("10.0.0.1")), &xff, &trusted),
            ip("1.2.3.4")
        );
        assert_eq!(
            client_ip(
                Some(&peer("10.0.0.1")),
                &headers(&[("x-real-ip", "5.5.5.5")]),
                &trusted
            ),
            ip("5.5.5.5")
        );
        assert_eq!(
            client_ip(Some(&peer("10.0.0.1")), &HeaderMap::new(), &trusted),
            ip("10.0.0.1")
        );
        assert_eq!(client_ip(None, &xff, &trusted), None);
    }
}
