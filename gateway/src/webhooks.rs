//! Where alert webhooks may point (`specs/gateway-api.md#webhooks`).
//!
//! A webhook URL is chosen by an org admin, but the gateway makes the request from inside
//! its own network. Unless the gateway is told otherwise
//! ([`GatewayConfig::private_webhooks`](crate::GatewayConfig)), a webhook must reach a
//! public address: loopback, private, link-local (cloud metadata at 169.254.169.254),
//! carrier-grade NAT, unique-local, multicast and unspecified addresses are refused, both
//! when the URL is set (an IP literal, or `localhost`) and at every delivery, after the
//! name is resolved. The delivery then connects to the address that was checked, so a name
//! that resolves differently a moment later (DNS rebinding) cannot redirect it, and
//! redirects are never followed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// Why a webhook URL is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// Not a usable http(s) URL.
    #[error("{0}")]
    Url(String),
    /// It points at an address inside the gateway's network.
    #[error("the webhook's host {host} is a {what} address; webhooks must reach a public address")]
    Private {
        /// The host named.
        host: String,
        /// What kind of address.
        what: &'static str,
    },
    /// Its name does not resolve.
    #[error("the webhook's host {0} does not resolve")]
    Unresolved(String),
}

/// What kind of non-public address `ip` is, if it is one.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => non_public_v4(v4),
            None => non_public_v6(v6),
        },
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.is_unspecified() || a == 0 {
        Some("unspecified")
    } else if ip.is_broadcast() || ip.is_multicast() || a >= 240 {
        Some("multicast or reserved")
    } else if a == 100 && (64..128).contains(&b) {
        Some("carrier-grade NAT")
    } else if ip.is_documentation() || (a == 198 && (b == 18 || b == 19)) {
        Some("documentation or benchmarking")
    } else {
        None
    }
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if first & 0xfe00 == 0xfc00 {
        Some("unique-local")
    } else if first & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if first == 0x2001 && ip.segments()[1] == 0x0db8 {
        Some("documentation")
    } else {
        None
    }
}

/// The host and port of an http(s) URL.
fn host_port(url: &str) -> Result<(String, u16), TargetError> {
    let parsed: reqwest::Url = url
        .parse()
        .map_err(|e| TargetError::Url(format!("bad url: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(TargetError::Url("url must be http:// or https://".into()));
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| TargetError::Url("url has no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| TargetError::Url("url has no port".into()))?;
    Ok((host, port))
}

/// Checks a URL as it is set: a literal address or `localhost` inside the gateway's
/// network is refused at once (names are checked again at each delivery).
pub fn check_url(url: &str, allow_private: bool) -> Result<(), TargetError> {
    let (host, _) = host_port(url)?;
    if allow_private {
        return Ok(());
    }
    let lower = host.trim_end_matches('.').to_ascii_lowercase();
    if lower == "localhost" || lower.ends_with(".localhost") {
        return Err(TargetError::Private {
            host,
            what: "loopback",
        });
    }
    if let Ok(ip) = host.parse::<IpAddr>()
        && let Some(what) = non_public(ip)
    {
        return Err(TargetError::Private { host, what });
    }
    Ok(())
}

/// A client that delivers to `url`: with `allow_private` off, its host is resolved now, every
/// address checked, and the client pinned to the first one.
pub async fn client_for(
    url: &str,
    timeout: Duration,
    allow_private: bool,
) -> Result<reqwest::Client, TargetError> {
    let builder = reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none());
    let builder = if allow_private {
        builder
    } else {
        check_url(url, false)?;
        let (host, port) = host_port(url)?;
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::time::timeout(timeout, tokio::net::lookup_host((host.as_str(), port)))
                .await
                .map_err(|_| TargetError::Unresolved(host.clone()))?
                .map_err(|_| TargetError::Unresolved(host.clone()))?
                .take(16)
                .collect(),
        };
        let Some(first) = addrs.first().copied() else {
            return Err(TargetError::Unresolved(host));
        };
        if let Some(what) = addrs.iter().find_map(|a| non_public(a.ip())) {
            return Err(TargetError::Private { host, what });
        }
        builder.resolve(&host, first)
    };
    builder
        .build()
        .map_err(|e| TargetError::Url(format!("cannot build the client: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_inside_the_network_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            let ip: IpAddr = ip.parse().expect("ip");
            assert!(non_public(ip).is_some(), "{ip} passed");
        }
        for ip in ["1.1.1.1", "93.184.216.34", "2606:4700::1111"] {
            let ip: IpAddr = ip.parse().expect("ip");
            assert_eq!(non_public(ip), None, "{ip} refused");
        }
    }

    #[test]
    fn urls_are_checked_as_they_are_set() {
        for url in [
            "http://127.0.0.1:8080/hook",
            "http://localhost/hook",
            "http://api.localhost/hook",
            "http://[::1]/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://10.0.0.5/",
        ] {
            assert!(
                matches!(check_url(url, false), Err(TargetError::Private { .. })),
                "{url}"
            );
            assert!(check_url(url, true).is_ok(), "{url} with private allowed");
        }
        assert!(check_url("https://hooks.example.com/x", false).is_ok());
        assert!(matches!(
            check_url("ftp://example.com/", false),
            Err(TargetError::Url(_))
        ));
    }

    #[tokio::test]
    async fn a_delivery_checks_its_target_again() {
        for url in ["http://localhost.:9/hook", "http://127.0.0.1:9/hook"] {
            let refused = client_for(url, Duration::from_secs(2), false).await;
            assert!(
                matches!(refused, Err(TargetError::Private { .. })),
                "{url}: {refused:?}"
            );
            assert!(
                client_for(url, Duration::from_secs(2), true).await.is_ok(),
                "{url} is allowed when private webhooks are"
            );
        }
    }
}
