//! The address guard of `http_fetch`: which IP addresses a call may connect to.
//!
//! By default only public addresses: loopback, private (RFC 1918, `fc00::/7`), link-local,
//! shared (`100.64.0.0/10`), unspecified, multicast, documentation, benchmarking and other
//! reserved ranges are refused, and so is an IPv6 address that embeds such an IPv4 address
//! (mapped, NAT64, 6to4). [`AddressPolicy`] opens them all (`allow_private`) or some
//! networks (`allow_networks`). [`GuardedResolver`] applies the policy to what DNS answers,
//! and hands reqwest only the addresses that pass, so the address checked is the address
//! connected: a name cannot be pointed inside, before or after a redirect. Literal IP hosts
//! never reach a resolver; the URL check in the parent module applies [`AddressPolicy`]
//! to them.
//!
//! It must never connect anywhere itself, nor hand reqwest an address the policy refuses.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// How to let a call reach non-public addresses, named in refusals.
const HOW_TO_ALLOW: &str = "allow with `allow_private = true` or an `allow_networks` entry";

/// Which non-public addresses calls may reach; public addresses always pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AddressPolicy {
    /// Every non-public address passes.
    pub(crate) allow_private: bool,
    /// Non-public addresses inside one of these pass.
    pub(crate) networks: Vec<Network>,
}

impl AddressPolicy {
    /// What kind of refused address `ip` is (`"loopback"`, `"private"`, ...), if refused.
    pub(crate) fn refusal(&self, ip: IpAddr) -> Option<&'static str> {
        if self.allow_private {
            return None;
        }
        let kind = non_public(ip)?;
        if self.networks.iter().any(|n| n.contains(ip)) {
            None
        } else {
            Some(kind)
        }
    }

    /// The refusal of a literal IP host, naming it and its kind.
    pub(crate) fn refuse_literal(&self, ip: IpAddr) -> Option<String> {
        let kind = self.refusal(ip)?;
        Some(format!(
            "{ip} is not a public address ({kind}); {HOW_TO_ALLOW}"
        ))
    }
}

/// An IP network, `address/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// Parses `10.0.0.0/8`, `fd00::/8`, or a single address (`127.0.0.1`, `::1`).
    pub(crate) fn parse(text: &str) -> Result<Network, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| {
                format!("\"{text}\" is not an IP network (write `10.0.0.0/8`, `fd00::/8` or `127.0.0.1`)")
            })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return Err(format!("\"{text}\": the prefix length must be 0 to {max}")),
            },
        };
        Ok(Network { addr, prefix })
    }

    /// True when `ip` lies inside; an IPv4-mapped IPv6 address counts as its IPv4 address.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => same_prefix(
                u128::from(net.to_bits()) << 96,
                u128::from(ip.to_bits()) << 96,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                same_prefix(net.to_bits(), ip.to_bits(), self.prefix)
            }
            _ => false,
        }
    }
}

/// True when the first `prefix` bits of `a` and `b` agree (both left-aligned in 128 bits).
fn same_prefix(a: u128, b: u128, prefix: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    a & mask == b & mask
}

/// `ip`, with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) turned into its IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// The kind of a non-public address, or `None` for a public one.
pub(crate) fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => non_public_v6(v6),
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let kind = match (a, b, c) {
        (0, _, _) => "unspecified",
        (10, _, _) => "private",
        (100, 64..=127, _) => "shared, carrier-grade NAT",
        (127, _, _) => "loopback",
        (169, 254, _) => "link-local",
        (172, 16..=31, _) => "private",
        (192, 0, 0) => "IETF protocol",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (192, 88, 99) => "6to4 relay",
        (192, 168, _) => "private",
        (198, 18..=19, _) => "benchmarking",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved",
        _ => return None,
    };
    Some(kind)
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return non_public_v4(v4);
    }
    let bits = ip.to_bits();
    let segments = ip.segments();
    let embedded_v4 = |shift: u32| Ipv4Addr::from_bits((bits >> shift) as u32);
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    let kind = match segments {
        // IPv4-compatible (deprecated): ::a.b.c.d
        [0, 0, 0, 0, 0, 0, _, _] => "IPv4-compatible",
        // NAT64 (64:ff9b::/96) reaches the embedded IPv4 address.
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => return non_public_v4(embedded_v4(0)),
        [0x64, 0xff9b, 1, ..] => "local-use NAT64",
        [0x100, 0, 0, 0, ..] => "discard-only",
        // Teredo hides the address it reaches.
        [0x2001, 0, ..] => "Teredo",
        [0x2001, 0x2, 0, ..] => "benchmarking",
        [0x2001, 0xdb8, ..] => "documentation",
        [0x2001, s, ..] if (0x10..=0x2f).contains(&s) => "ORCHID",
        // 6to4 (2002::/16) reaches the IPv4 address in bits 16..48.
        [0x2002, ..] => return non_public_v4(embedded_v4(80)),
        [0x3fff, s, ..] if s <= 0x0fff => "documentation",
        [s, ..] if s & 0xfe00 == 0xfc00 => "unique local",
        [s, ..] if s & 0xffc0 == 0xfe80 => "link-local",
        [s, ..] if s & 0xffc0 == 0xfec0 => "site-local",
        [s, ..] if s & 0xff00 == 0xff00 => "multicast",
        _ => return None,
    };
    Some(kind)
}

/// A resolver that resolves like the system does, then keeps only the addresses
/// [`AddressPolicy`] lets through; when none is left it fails with [`AddressRefused`].
#[derive(Debug, Clone)]
pub(crate) struct GuardedResolver {
    pub(crate) policy: Arc<AddressPolicy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = Vec::new();
            let mut allowed = Vec::with_capacity(found.len());
            for addr in found {
                match policy.refusal(addr.ip()) {
                    Some(kind) => refused.push((addr.ip(), kind)),
                    None => allowed.push(addr),
                }
            }
            if allowed.is_empty() && !refused.is_empty() {
                let refusal: Box<dyn std::error::Error + Send + Sync> =
                    Box::new(AddressRefused { host, refused });
                return Err(refusal);
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// Every address a name resolved to is one the policy refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AddressRefused {
    host: String,
    /// Each address with its kind (`"loopback"`, ...).
    refused: Vec<(IpAddr, &'static str)>,
}

impl fmt::Display for AddressRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "host \"{}\" resolves only to non-public addresses: ",
            self.host
        )?;
        for (i, (ip, kind)) in self.refused.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{ip} ({kind})")?;
        }
        write!(f, "; {HOW_TO_ALLOW}")
    }
}

impl std::error::Error for AddressRefused {}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    #[test]
    fn non_public_addresses_are_recognised_and_public_ones_pass() {
        for (addr, kind) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("100.64.0.1", "shared, carrier-grade NAT"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "reserved"),
            ("198.18.0.1", "benchmarking"),
            ("192.0.2.7", "documentation"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("::127.0.0.1", "IPv4-compatible"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("2002:c0a8:0101::1", "private"),
            ("fc00::1", "unique local"),
            ("fd12:3456::1", "unique local"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "documentation"),
            ("2001::1", "Teredo"),
        ] {
            assert_eq!(non_public(ip(addr)), Some(kind), "{addr}");
        }
        for addr in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "169.255.0.1",
            "192.169.0.1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:0808:0808::1",
            "2606:4700:4700::1111",
            "2a00:1450::1",
        ] {
            assert_eq!(non_public(ip(addr)), None, "{addr}");
        }
    }

    #[test]
    fn networks_parse_and_contain_their_addresses() {
        let net = |t: &str| Network::parse(t).expect("network");
        assert!(net("127.0.0.0/8").contains(ip("127.9.9.9")));
        assert!(net("127.0.0.0/8").contains(ip("::ffff:127.0.0.1")));
        assert!(!net("127.0.0.0/8").contains(ip("128.0.0.1")));
        assert!(!net("127.0.0.0/8").contains(ip("::1")));
        assert!(net("127.0.0.1").contains(ip("127.0.0.1")));
        assert!(!net("127.0.0.1").contains(ip("127.0.0.2")));
        assert!(net("10.20.0.0/14").contains(ip("10.23.255.255")));
        assert!(!net("10.20.0.0/14").contains(ip("10.24.0.0")));
        assert!(net("0.0.0.0/0").contains(ip("10.0.0.1")));
        assert!(net("fd00::/8").contains(ip("fd12::1")));
        assert!(!net("fd00::/8").contains(ip("fc00::1")));
        assert!(net("[::1]").contains(ip("::1")));
        assert!(net("::/0").contains(ip("fe80::1")));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "example.com",
            "10.0.0.0/-1",
        ] {
            assert!(Network::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_policy_refuses_non_public_addresses_unless_allowed() {
        let strict = AddressPolicy::default();
        assert_eq!(strict.refusal(ip("127.0.0.1")), Some("loopback"));
        assert_eq!(strict.refusal(ip("93.184.215.14")), None);
        let open = AddressPolicy {
            allow_private: true,
            networks: Vec::new(),
        };
        assert_eq!(open.refusal(ip("169.254.169.254")), None);
        let some = AddressPolicy {
            allow_private: false,
            networks: vec![Network::parse("10.1.0.0/16").expect("network")],
        };
        assert_eq!(some.refusal(ip("10.1.2.3")), None);
        assert_eq!(some.refusal(ip("10.2.0.1")), Some("private"));
        let message = strict.refuse_literal(ip("::1")).expect("refused");
        assert!(
            message.starts_with("::1 is not a public address (loopback); "),
            "{message}"
        );
        assert!(message.contains("allow_private"), "{message}");
    }
}
