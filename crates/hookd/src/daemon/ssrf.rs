//! The SSRF guard: hookd sends requests to URLs that its users' customers type in, so it
//! must not let them reach the machine it runs on or the network behind it.
//!
//! The address rules are pure ([`is_public`]). They are applied at registration (a clear
//! 422) and again at send time, after DNS resolution, by [`GuardedResolver`], so a name
//! that resolves differently later (DNS rebinding) is still caught.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use url::{Host, Url};

/// Whether a destination address is on the public internet.
///
/// Not public: unspecified, loopback, private (RFC 1918), link-local (cloud metadata at
/// 169.254.169.254 included), CGNAT (100.64/10), multicast, broadcast, reserved,
/// documentation and benchmarking ranges, IPv6 unique-local and site-local, and any IPv6
/// form that embeds one of those IPv4 addresses (mapped, compatible, NAT64, 6to4).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || a == 0
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || (a == 100 && (64..128).contains(&b)) // CGNAT
        || ip.is_multicast()
        || a >= 240 // reserved, broadcast
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || ip.is_documentation()
        || (a == 198 && (b == 18 || b == 19))) // benchmarking
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let seg = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    // NAT64 (64:ff9b::/96) carries an IPv4 address in its last 32 bits.
    if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0] {
        return is_public_v4(embedded_v4(&seg[6..8]));
    }
    // 6to4 (2002::/16) carries one in bits 16..48.
    if seg[0] == 0x2002 {
        return is_public_v4(embedded_v4(&seg[1..3]));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || seg[0..6] == [0, 0, 0, 0, 0, 0] // IPv4-compatible (deprecated) and the rest of ::/96
        || (seg[0] & 0xfe00) == 0xfc00 // unique local
        || (seg[0] & 0xffc0) == 0xfe80 // link-local
        || (seg[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (seg[0] & 0xff00) == 0xff00 // multicast
        || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
        || (seg[0] == 0x0100 && seg[1..4] == [0, 0, 0])) // discard
}

fn embedded_v4(segments: &[u16]) -> Ipv4Addr {
    let [hi, lo] = [segments[0], segments[1]];
    Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)
}

/// Which destinations hookd may send to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetPolicy {
    /// Anything goes (tests and local development).
    pub allow_private: bool,
    /// Ranges allowed although not public (`HOOKD_ALLOW_TARGETS=10.20.0.0/16,fd00::/8`).
    pub allowed: Vec<ipnet::IpNet>,
    /// Refuse `http://` URLs.
    pub https_only: bool,
}

impl TargetPolicy {
    /// Whether an address may be sent to.
    pub fn permits(&self, ip: IpAddr) -> bool {
        self.allow_private || is_public(ip) || self.allowed.iter().any(|net| net.contains(&ip))
    }
}

/// Parses a comma-separated list of CIDR ranges (a bare address is a /32 or /128).
pub fn parse_ranges(text: &str) -> Result<Vec<ipnet::IpNet>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("{s:?} is not a CIDR range such as 10.0.0.0/8"))
        })
        .collect()
}

/// Checks an endpoint URL at registration: http(s) (https only if the policy says so), a
/// host, no credentials, and no address literal or `localhost` the policy refuses.
pub fn check_url(text: &str, policy: &TargetPolicy) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("url is not a valid URL: {e}"))?;
    match url.scheme() {
        "https" => {}
        "http" if policy.https_only => {
            return Err("url must be https (HOOKD_HTTPS_ONLY is set)".into());
        }
        "http" => {}
        other => return Err(format!("url must be http or https, not {other}")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("url must not carry credentials; use bearer_token".into());
    }
    if url.fragment().is_some() {
        return Err("url must not have a #fragment".into());
    }
    let host = url.host().ok_or("url must have a host")?;
    let blocked = match &host {
        Host::Ipv4(ip) => !policy.permits(IpAddr::V4(*ip)),
        Host::Ipv6(ip) => !policy.permits(IpAddr::V6(*ip)),
        Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            !policy.allow_private && (name == "localhost" || name.ends_with(".localhost"))
        }
    };
    if blocked {
        return Err(format!(
            "url points to a non-public address ({host}); set HOOKD_ALLOW_PRIVATE_TARGETS=true or list it in HOOKD_ALLOW_TARGETS"
        ));
    }
    Ok(url)
}

/// The address literal a URL names, if it names one (such URLs skip DNS).
pub fn literal_ip(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        Host::Domain(_) => None,
    }
}

/// A destination refused by the guard. Found in a request error's source chain, it makes
/// the attempt's outcome `blocked`.
#[derive(Debug, thiserror::Error)]
#[error("destination {host} is not a public address ({addrs}); set HOOKD_ALLOW_PRIVATE_TARGETS=true or list it in HOOKD_ALLOW_TARGETS")]
pub struct Blocked {
    pub host: String,
    pub addrs: String,
}

/// Whether an error (or any error it wraps) is a [`Blocked`].
pub fn is_blocked(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.downcast_ref::<Blocked>().is_some() {
            return true;
        }
        current = e.source();
    }
    false
}

/// Resolves with the system resolver, then drops every address the policy refuses; a name
/// left with none fails with [`Blocked`]. Installed in the HTTP client unless private
/// targets are allowed.
///
/// The egress proxy's own host name, when there is one, is resolved unfiltered: the client
/// resolves it with this resolver too, and a proxy usually sits at a private address.
#[derive(Debug, Default)]
pub struct GuardedResolver {
    policy: Arc<TargetPolicy>,
    proxy_host: Option<String>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let is_proxy = self
            .proxy_host
            .as_deref()
            .is_some_and(|proxy| proxy.eq_ignore_ascii_case(name.as_str()));
        Box::pin(async move {
            let host = name.as_str().to_string();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if is_proxy {
                return Ok(Box::new(all.into_iter()) as reqwest::dns::Addrs);
            }
            let permitted: Vec<SocketAddr> = all
                .iter()
                .copied()
                .filter(|a| policy.permits(a.ip()))
                .collect();
            if permitted.is_empty() {
                let addrs = all
                    .iter()
                    .map(|a| a.ip().to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(
                    Box::new(Blocked { host, addrs }) as Box<dyn std::error::Error + Send + Sync>
                );
            }
            Ok(Box::new(permitted.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The resolver for the HTTP client.
pub fn resolver(policy: Arc<TargetPolicy>) -> Arc<GuardedResolver> {
    Arc::new(GuardedResolver {
        policy,
        proxy_host: None,
    })
}

/// The resolver for an HTTP client whose every request goes through the egress proxy at
/// `proxy_host`, which it resolves unfiltered.
pub fn resolver_with_proxy(policy: Arc<TargetPolicy>, proxy_host: &str) -> Arc<GuardedResolver> {
    Arc::new(GuardedResolver {
        policy,
        proxy_host: Some(proxy_host.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_table() {
        let cases = [
            ("8.8.8.8", true),
            ("1.1.1.1", true),
            ("93.184.216.34", true),
            ("0.0.0.0", false),
            ("0.1.2.3", false),
            ("127.0.0.1", false),
            ("127.255.255.254", false),
            ("10.0.0.1", false),
            ("172.16.0.1", false),
            ("172.31.255.255", false),
            ("172.32.0.1", true),
            ("192.168.1.1", false),
            ("169.254.169.254", false),
            ("100.64.0.1", false),
            ("100.127.255.255", false),
            ("100.128.0.1", true),
            ("224.0.0.1", false),
            ("239.255.255.250", false),
            ("240.0.0.1", false),
            ("255.255.255.255", false),
            ("192.0.0.8", false),
            ("192.0.2.1", false),
            ("198.18.0.1", false),
            ("203.0.113.9", false),
            ("::", false),
            ("::1", false),
            ("::ffff:127.0.0.1", false),
            ("::ffff:169.254.169.254", false),
            ("::ffff:8.8.8.8", true),
            ("::127.0.0.1", false),
            ("64:ff9b::a00:1", false),
            ("64:ff9b::808:808", true),
            ("2002:7f00:1::", false),
            ("2002:808:808::", true),
            ("fc00::1", false),
            ("fd12:3456::1", false),
            ("fe80::1", false),
            ("fec0::1", false),
            ("ff02::1", false),
            ("2001:db8::1", false),
            ("100::1", false),
            ("2606:4700:4700::1111", true),
        ];
        for (ip, want) in cases {
            assert_eq!(is_public(ip.parse().unwrap()), want, "{ip}");
        }
    }

    #[test]
    fn url_table() {
        let cases: &[(&str, bool, bool)] = &[
            ("https://example.com/hook", false, true),
            ("http://example.com:8080/a?b=c", false, true),
            ("ftp://example.com/", false, false),
            ("not a url", false, false),
            ("https://user:pw@example.com/", false, false),
            ("https://example.com/#frag", false, false),
            ("http://127.0.0.1:9000/hook", false, false),
            ("http://127.0.0.1:9000/hook", true, true),
            ("http://localhost/hook", false, false),
            ("http://LOCALHOST./hook", false, false),
            ("http://api.localhost/hook", false, false),
            ("http://localhost/hook", true, true),
            ("http://169.254.169.254/latest/meta-data", false, false),
            ("http://[::1]/", false, false),
            ("http://[::ffff:10.0.0.1]/", false, false),
            ("http://0x7f000001/", false, false),
            ("http://2130706433/", false, false),
            ("http://8.8.8.8/", false, true),
        ];
        for (url, allow, ok) in cases {
            let policy = TargetPolicy {
                allow_private: *allow,
                ..Default::default()
            };
            assert_eq!(
                check_url(url, &policy).is_ok(),
                *ok,
                "{url} allow_private={allow}"
            );
        }
    }

    #[test]
    fn allow_list_and_https_only() {
        let policy = TargetPolicy {
            allowed: parse_ranges("10.20.0.0/16, 192.168.1.7,fd00::/8").unwrap(),
            ..Default::default()
        };
        for (ip, want) in [
            ("10.20.3.4", true),
            ("10.21.0.1", false),
            ("192.168.1.7", true),
            ("192.168.1.8", false),
            ("fd00::1", true),
            ("127.0.0.1", false),
            ("8.8.8.8", true),
        ] {
            assert_eq!(policy.permits(ip.parse().unwrap()), want, "{ip}");
        }
        assert!(check_url("http://10.20.0.9/hook", &policy).is_ok());
        assert!(check_url("http://10.30.0.9/hook", &policy).is_err());
        assert!(parse_ranges("10.0.0.0/33").is_err());
        assert!(parse_ranges("nonsense").is_err());
        assert_eq!(parse_ranges("").unwrap(), vec![]);
        let strict = TargetPolicy {
            https_only: true,
            ..Default::default()
        };
        assert!(check_url("https://example.com/", &strict).is_ok());
        assert!(check_url("http://example.com/", &strict)
            .unwrap_err()
            .contains("https"));
    }

    #[tokio::test]
    async fn resolver_refuses_names_of_private_addresses() {
        use reqwest::dns::Resolve;
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let err = match GuardedResolver::default().resolve(name).await {
            Ok(_) => panic!("localhost must be refused"),
            Err(e) => e,
        };
        assert!(is_blocked(err.as_ref()), "{err}");
    }

    #[tokio::test]
    async fn only_the_proxys_own_name_resolves_unfiltered() {
        use reqwest::dns::Resolve;
        let localhost = || "localhost".parse::<reqwest::dns::Name>().unwrap();
        let proxy_here = resolver_with_proxy(Default::default(), "LOCALHOST");
        assert!(
            proxy_here.resolve(localhost()).await.is_ok(),
            "the proxy's name resolves, private or not"
        );
        let proxy_elsewhere = resolver_with_proxy(Default::default(), "proxy.internal");
        let err = match proxy_elsewhere.resolve(localhost()).await {
            Ok(_) => panic!("a private name that is not the proxy's must be refused"),
            Err(e) => e,
        };
        assert!(is_blocked(err.as_ref()), "{err}");
    }

    #[tokio::test]
    async fn client_requests_to_private_names_are_blocked() {
        let client = reqwest::Client::builder()
            .dns_resolver(resolver(Default::default()))
            .build()
            .unwrap();
        let err = client.get("http://localhost:9/").send().await.unwrap_err();
        assert!(is_blocked(&err), "{err:?}");
    }
}
