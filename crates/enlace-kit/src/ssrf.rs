//! The SSRF guard: which destinations a recipe may make Enlace call.
//!
//! A recipe author controls the URL of an `http.request` step, so without a guard anyone who
//! can save a recipe could read the cloud metadata service (169.254.169.254), the admin port
//! of a database on the same network, or Enlace's own API on loopback. The guard refuses
//! loopback, private, link-local, CGNAT, unspecified, broadcast, multicast and reserved
//! addresses, IPv4 forms hidden inside IPv6 ones, and metadata host names, unless the
//! installation sets `ENLACE_ALLOW_PRIVATE_NETWORKS=true`.
//!
//! The check is made on the addresses actually connected to, after DNS resolution (a
//! custom resolver, [`GuardedResolver`]), so a public name that resolves to a private
//! address is refused too, and there is no gap between the check and the connection.
//! URLs whose host is an IP literal skip the resolver, so [`check_url`] checks them before
//! sending, and the redirect policy checks every hop with it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::redirect;

use enlace_core::http::TransportError;

/// The environment variable that lifts the guard.
pub const ALLOW_PRIVATE_ENV: &str = "ENLACE_ALLOW_PRIVATE_NETWORKS";

/// How many redirects a request may follow.
pub const MAX_REDIRECTS: usize = 10;

/// Why an IP address may not be called, or `None` when it is a public address.
pub fn forbidden_ip(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    if ip.is_unspecified() || a == 0 {
        Some("unspecified (\"this network\") address")
    } else if ip.is_loopback() {
        Some("loopback address")
    } else if ip.is_private() {
        Some("private network address")
    } else if a == 100 && (64..128).contains(&b) {
        // 100.64.0.0/10, RFC 6598: carrier-grade NAT, also used by some clouds' internal
        // services (Alibaba's metadata service is 100.100.100.200).
        Some("shared (CGNAT) address")
    } else if ip.is_link_local() {
        // 169.254.0.0/16, which holds the cloud metadata service 169.254.169.254.
        Some("link-local address (cloud metadata lives here)")
    } else if ip.is_broadcast() {
        Some("broadcast address")
    } else if ip.is_multicast() {
        Some("multicast address")
    } else if a == 192 && b == 0 && c == 0 {
        // 192.0.0.0/24, RFC 6890: IETF protocol assignments (Oracle's metadata is 192.0.0.192).
        Some("IETF protocol assignment address")
    } else if a == 198 && (b == 18 || b == 19) {
        Some("benchmarking network address")
    } else if a >= 240 {
        Some("reserved address")
    } else {
        None
    }
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified address");
    }
    if ip.is_loopback() {
        return Some("loopback address");
    }
    // IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d) and NAT64 (64:ff9b::a.b.c.d)
    // forms carry an IPv4 address that the OS or a gateway may reach.
    let embedded = if let Some(v4) = ip.to_ipv4_mapped() {
        Some(v4)
    } else if seg[..6] == [0, 0, 0, 0, 0, 0] || seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        Some(Ipv4Addr::from(((seg[6] as u32) << 16) | seg[7] as u32))
    } else {
        None
    };
    if let Some(v4) = embedded {
        return forbidden_v4(v4).map(|_| "IPv6 form of a forbidden IPv4 address");
    }
    if ip.is_unique_local() {
        // fc00::/7, which holds AWS's IPv6 metadata address fd00:ec2::254.
        Some("private (unique local) address")
    } else if ip.is_unicast_link_local() {
        Some("link-local address")
    } else if seg[0] & 0xffc0 == 0xfec0 {
        Some("site-local address")
    } else if ip.is_multicast() {
        Some("multicast address")
    } else {
        None
    }
}

/// Why a host name may not be called before it is even resolved: the cloud metadata names
/// and the `.internal` domain reserved for private use.
pub fn forbidden_name(host: &str) -> Option<&'static str> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    match host.as_str() {
        "metadata" | "metadata.goog" | "metadata.google.internal" | "instance-data" => Some("cloud metadata host name"),
        h if h == "internal" || h.ends_with(".internal") => Some("private `.internal` host name"),
        _ => None,
    }
}

/// The guard refused a destination. Carried through reqwest's error chain so the transport
/// can tell it from a DNS failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The host as written in the URL.
    pub host: String,
    /// The address that is not allowed, when the refusal is about an address.
    pub addr: Option<IpAddr>,
    pub reason: &'static str,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            Some(addr) if addr.to_string() == self.host.trim_start_matches('[').trim_end_matches(']') => {
                write!(f, "refused to call {addr}: it is a {}", self.reason)?
            }
            Some(addr) => write!(f, "refused to call `{}`: it resolves to {addr}, a {}", self.host, self.reason)?,
            None => write!(f, "refused to call `{}`: it is a {}", self.host, self.reason)?,
        }
        write!(
            f,
            "; Enlace does not call loopback, private, link-local or metadata addresses unless the installation sets {ALLOW_PRIVATE_ENV}=true"
        )
    }
}

impl std::error::Error for Refused {}

impl From<Refused> for TransportError {
    fn from(r: Refused) -> Self {
        TransportError::Forbidden(r.to_string())
    }
}

/// A host name could not be resolved (as opposed to: it resolved to a refused address).
#[derive(Debug)]
pub struct DnsFailure {
    pub host: String,
    pub cause: String,
}

impl fmt::Display for DnsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "could not resolve `{}`: {}", self.host, self.cause)
    }
}

impl std::error::Error for DnsFailure {}

/// Checks every address a name resolved to; any forbidden one refuses the lot (a name with
/// one public and one private address must not be used to reach the private one).
pub fn check_resolved(host: &str, addrs: &[SocketAddr], allow_private: bool) -> Result<(), Refused> {
    if allow_private {
        return Ok(());
    }
    for a in addrs {
        if let Some(reason) = forbidden_ip(a.ip()) {
            return Err(Refused { host: host.to_string(), addr: Some(a.ip()), reason });
        }
    }
    Ok(())
}

/// Checks a URL before it is sent or followed: the scheme must be http or https, and a host
/// written as an IP literal (which skips DNS) must be allowed. Host names are checked
/// against [`forbidden_name`] here and against their addresses by [`GuardedResolver`].
pub fn check_url(url: &Url, allow_private: bool) -> Result<(), TransportError> {
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return Err(TransportError::InvalidUrl(format!("the scheme `{other}` is not allowed; use http or https")));
        }
    }
    // The url crate normalises IPv4 literals (`0x7f.1`, `2130706433`) to dotted form and
    // writes IPv6 literals in brackets, so parsing `host_str` finds every literal.
    let host = url.host_str().filter(|h| !h.is_empty()).ok_or_else(|| TransportError::InvalidUrl("the URL has no host".into()))?;
    if allow_private {
        return Ok(());
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let refusal = match bare.parse::<IpAddr>() {
        Ok(ip) => forbidden_ip(ip).map(|r| (Some(ip), r)),
        Err(_) => forbidden_name(host).map(|r| (None, r)),
    };
    match refusal {
        Some((addr, reason)) => Err(Refused { host: host.to_string(), addr, reason }.into()),
        None => Ok(()),
    }
}

/// What the redirect policy decides for one hop.
pub fn check_redirect(next: &Url, previous: &[Url], allow_private: bool) -> Result<(), TransportError> {
    // `previous` holds the original URL and every hop followed so far.
    if previous.len() > MAX_REDIRECTS {
        return Err(TransportError::Other(format!("more than {MAX_REDIRECTS} redirects; the target is probably looping")));
    }
    check_url(next, allow_private)
}

/// The redirect policy: [`check_redirect`] on every hop.
pub fn redirect_policy(allow_private: bool) -> redirect::Policy {
    redirect::Policy::custom(move |attempt| match check_redirect(attempt.url(), attempt.previous(), allow_private) {
        Ok(()) => attempt.follow(),
        Err(TransportError::Forbidden(msg)) => attempt.error(RedirectRefused(msg)),
        Err(other) => attempt.error(RedirectStopped(other.to_string())),
    })
}

/// A redirect hop refused by the guard (found again in reqwest's error chain).
#[derive(Debug)]
pub(crate) struct RedirectRefused(pub String);

impl fmt::Display for RedirectRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a redirect was refused: {}", self.0)
    }
}

impl std::error::Error for RedirectRefused {}

/// A redirect hop stopped for another reason (too many hops, a bad scheme).
#[derive(Debug)]
pub(crate) struct RedirectStopped(pub String);

impl fmt::Display for RedirectStopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a redirect was not followed: {}", self.0)
    }
}

impl std::error::Error for RedirectStopped {}

/// A DNS resolver that resolves with the system resolver, then refuses forbidden addresses.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs = resolve_checked(&host, allow_private).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Resolves `host` and applies the guard. The error is a [`Refused`] or a [`DnsFailure`].
pub async fn resolve_checked(host: &str, allow_private: bool) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
    if !allow_private && let Some(reason) = forbidden_name(host) {
        return Err(Box::new(Refused { host: host.to_string(), addr: None, reason }));
    }
    let addrs: Vec<SocketAddr> = match tokio::net::lookup_host((host, 0)).await {
        Ok(it) => it.collect(),
        Err(e) => {
            return Err(Box::new(DnsFailure { host: host.to_string(), cause: e.to_string() }));
        }
    };
    if addrs.is_empty() {
        return Err(Box::new(DnsFailure { host: host.to_string(), cause: "no address found".into() }));
    }
    check_resolved(host, &addrs, allow_private)?;
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn forbidden_addresses() {
        let refused = [
            "127.0.0.1",
            "127.9.9.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "100.100.100.200",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "192.0.0.192",
            "198.18.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ];
        for ip in refused {
            assert!(forbidden_ip(ip.parse().unwrap()).is_some(), "{ip} must be refused");
        }
        let allowed = [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "172.15.255.255",
            "100.128.0.1",
            "100.63.255.255",
            "93.184.216.34",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ];
        for ip in allowed {
            assert_eq!(forbidden_ip(ip.parse().unwrap()), None, "{ip} must be allowed");
        }
        assert_eq!(forbidden_ip("169.254.169.254".parse().unwrap()), Some("link-local address (cloud metadata lives here)"));
        assert_eq!(forbidden_ip("::ffff:127.0.0.1".parse().unwrap()), Some("IPv6 form of a forbidden IPv4 address"));
    }

    #[test]
    fn forbidden_names() {
        for name in
            ["metadata.google.internal", "METADATA.GOOGLE.INTERNAL.", "metadata", "metadata.goog", "db.corp.internal", "instance-data"]
        {
            assert!(forbidden_name(name).is_some(), "{name}");
        }
        for name in ["example.com", "internal.example.com", "metadata.example.com", "localhost"] {
            assert_eq!(forbidden_name(name), None, "{name} (names that resolve to private addresses are caught after resolution)");
        }
    }

    fn check(url: &str, allow: bool) -> Result<(), TransportError> {
        check_url(&Url::parse(url).unwrap(), allow)
    }

    #[test]
    fn literal_hosts_are_checked_before_sending() {
        for url in [
            "http://127.0.0.1/",
            "http://127.0.0.1:8080/x",
            "http://[::1]:8080/",
            "http://0x7f.1/",
            "http://2130706433/",
            "http://10.0.0.1/",
            "https://169.254.169.254/latest/meta-data/",
            "http://[::ffff:127.0.0.1]/",
            "http://[fd00:ec2::254]/",
            "http://metadata.google.internal/computeMetadata/v1/",
        ] {
            assert!(matches!(check(url, false), Err(TransportError::Forbidden(_))), "{url}: {:?}", check(url, false));
            assert_eq!(check(url, true), Ok(()), "{url} with private networks allowed");
        }
        assert_eq!(check("https://api.example.com/v1", false), Ok(()));
        assert_eq!(check("http://localhost:9/", false), Ok(()), "names are the resolver's job");
        for url in ["ftp://example.com/", "file:///etc/passwd", "gopher://127.0.0.1/"] {
            assert!(matches!(check(url, true), Err(TransportError::InvalidUrl(_))), "{url}");
        }
    }

    #[test]
    fn a_refusal_names_the_address_and_the_way_out() {
        let Err(TransportError::Forbidden(msg)) = check("http://169.254.169.254/", false) else { panic!("refused") };
        assert!(msg.contains("169.254.169.254"), "{msg}");
        assert!(msg.contains("link-local"), "{msg}");
        assert!(msg.contains("ENLACE_ALLOW_PRIVATE_NETWORKS=true"), "{msg}");
        let by_name = Refused { host: "evil.example".into(), addr: Some("10.0.0.5".parse().unwrap()), reason: "private network address" };
        let msg = by_name.to_string();
        assert!(msg.contains("`evil.example`: it resolves to 10.0.0.5, a private network address"), "{msg}");
    }

    #[test]
    fn redirect_hops_are_checked_and_counted() {
        let u = |s: &str| Url::parse(s).unwrap();
        let origin = vec![u("https://a.example/")];
        assert_eq!(check_redirect(&u("https://b.example/"), &origin, false), Ok(()));
        assert!(matches!(check_redirect(&u("http://169.254.169.254/"), &origin, false), Err(TransportError::Forbidden(_))));
        assert!(matches!(check_redirect(&u("http://[::1]/"), &origin, false), Err(TransportError::Forbidden(_))));
        assert!(matches!(check_redirect(&u("file:///etc/passwd"), &origin, true), Err(TransportError::InvalidUrl(_))));
        assert_eq!(check_redirect(&u("http://127.0.0.1/"), &origin, true), Ok(()));
        let ten_hops: Vec<Url> = (0..=10).map(|i| u(&format!("https://a.example/{i}"))).collect();
        assert_eq!(check_redirect(&u("https://b.example/"), &ten_hops[..10], false), Ok(()), "the tenth redirect is followed");
        let err = check_redirect(&u("https://b.example/"), &ten_hops, false).unwrap_err();
        assert!(err.to_string().contains("more than 10 redirects"), "{err}");
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_that_resolve_to_loopback() {
        let err = resolve_checked("localhost", false).await.unwrap_err();
        let refused = err.downcast_ref::<Refused>().expect("a refusal, not a DNS failure");
        assert!(refused.addr.is_some_and(|a| a.is_loopback()), "{refused:?}");
        assert!(refused.to_string().contains("`localhost`: it resolves to"), "{refused}");

        let addrs = resolve_checked("localhost", true).await.expect("allowed");
        assert!(addrs.iter().all(|a| a.ip().is_loopback()) && !addrs.is_empty(), "{addrs:?}");

        // Through reqwest's trait, as the client calls it.
        let resolver = GuardedResolver { allow_private: false };
        let err = match resolver.resolve(Name::from_str("localhost").unwrap()).await {
            Ok(_) => panic!("localhost must be refused"),
            Err(err) => err,
        };
        assert!(err.downcast_ref::<Refused>().is_some(), "{err}");

        // Metadata names are refused before any DNS query.
        let err = resolve_checked("metadata.google.internal", false).await.unwrap_err();
        assert_eq!(err.downcast_ref::<Refused>().map(|r| r.addr), Some(None), "{err}");
    }
}
