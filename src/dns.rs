//! DNS for every lookup mailroom makes: one [`Resolver`] (mail-auth's hickory resolver, so DKIM,
//! SPF and DMARC checks and plain TXT/MX/A lookups share one stack), aimed at the system's
//! resolvers (`/etc/resolv.conf`) or at the one `[dns] resolver` / `--resolver` names. The one
//! exception is the background resolution of recipient domains to providers, thousands of MX
//! lookups during a send: [`BulkMx`] asks the same servers with a datagram per lookup instead.
//!
//! It owns the answer/failure split that the checks depend on: a name or record that does not
//! exist (NXDOMAIN, or NOERROR with no data) is an *answer* (`Ok` of nothing); a timeout, a
//! REFUSED or a SERVFAIL means the question could not be asked (`Err` naming the resolver),
//! which callers must report as "could not check", never as "missing" or "fine". Every lookup
//! is bounded in time. It must not decide what a record means (that is `doctor::dns`) or cache
//! across runs.

use std::net::SocketAddr;
use std::time::Duration;

mod bulk;
pub use bulk::BulkMx;

use mail_auth::MessageAuthenticator;
use mail_auth::hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ProtocolConfig, ResolverConfig, ResolverOpts,
};
use mail_auth::hickory_resolver::net::{DnsError, NetError};
use mail_auth::hickory_resolver::proto::op::ResponseCode;
use mail_auth::hickory_resolver::proto::rr::{Name, RData};

/// How long one lookup may take end to end (the resolver's own retries included).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(4);

/// The resolver could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(
        "cannot read the system's DNS configuration (/etc/resolv.conf): {reason}\n\nName a resolver with --resolver IP:PORT or [dns] resolver = \"IP:PORT\" in campaign.toml."
    )]
    SystemConfig { reason: String },
    #[error("cannot start a DNS resolver for {resolver}: {reason}")]
    Start { resolver: String, reason: String },
}

/// Why a lookup got no answer (as opposed to an answer saying "no such record").
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// No reply in time (a resolver that is down, or a firewall).
    Timeout,
    /// The resolver answered REFUSED (it will not answer for that name, or for us).
    Refused,
    /// SERVFAIL: the resolver could not get an answer from the domain's servers.
    ServFail,
    /// Anything else: a socket error, a malformed reply, another response code.
    Other(String),
}

/// A lookup that got no answer. Displays as "TXT _dmarc.example.com: timed out (resolver
/// 127.0.0.1:5353)".
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, thiserror::Error)]
#[error("{rtype} {name}: {} (resolver {resolver})", describe(failure))]
pub struct LookupError {
    pub rtype: &'static str,
    pub name: String,
    pub failure: Failure,
    /// Which resolver was asked (the address, or "system: ..." with its nameservers).
    pub resolver: String,
}

impl LookupError {
    /// A failed lookup of `rtype` at `name` (shown without its final dot), asked of `resolver`.
    fn new(rtype: &'static str, name: &str, failure: Failure, resolver: &str) -> LookupError {
        LookupError {
            rtype,
            name: name.trim_end_matches('.').to_owned(),
            failure,
            resolver: resolver.to_owned(),
        }
    }
}

fn describe(f: &Failure) -> String {
    match f {
        Failure::Timeout => "timed out".into(),
        Failure::Refused => "refused by the resolver".into(),
        Failure::ServFail => "SERVFAIL (the resolver could not get an answer)".into(),
        Failure::Other(why) => why.clone(),
    }
}

/// One MX record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Mx {
    pub preference: u16,
    /// Lower-cased, without the final dot.
    pub exchange: String,
}

/// The resolver every lookup goes through. Cheap to clone (hickory's resolver is an `Arc`).
#[derive(Clone)]
pub struct Resolver {
    auth: MessageAuthenticator,
    label: String,
    timeout: Duration,
    /// The servers' UDP addresses, in the order they are asked (for [`BulkMx`]).
    servers: Vec<SocketAddr>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("resolver", &self.label)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Resolver {
    /// The resolver at `server` if given (`[dns] resolver`, `--resolver`), else the system's.
    /// Each lookup is bounded by `timeout`.
    ///
    /// # Errors
    /// When the system configuration cannot be read, or the resolver cannot be built.
    pub fn open(server: Option<SocketAddr>, timeout: Duration) -> Result<Resolver, Error> {
        // One attempt per server within the budget, so a dead resolver costs `timeout`, not
        // hickory's default of 3 × 5 s.
        let (config, mut opts, label, servers) = match server {
            Some(addr) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                let ns = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
                (
                    ResolverConfig::from_parts(None, vec![], vec![ns]),
                    ResolverOpts::default(),
                    addr.to_string(),
                    vec![addr],
                )
            }
            None => {
                let (config, opts) = mail_auth::hickory_resolver::system_conf::read_system_conf()
                    .map_err(|e| Error::SystemConfig {
                    reason: e.to_string(),
                })?;
                let servers: Vec<String> = config
                    .name_servers()
                    .iter()
                    .map(|n| n.ip.to_string())
                    .collect();
                let label = format!("system: {}", servers.join(", "));
                let udp = config
                    .name_servers()
                    .iter()
                    .map(|n| {
                        let port = n
                            .connections
                            .iter()
                            .find(|c| matches!(c.protocol, ProtocolConfig::Udp))
                            .map_or(53, |c| c.port);
                        SocketAddr::new(n.ip, port)
                    })
                    .collect();
                (config, opts, label, udp)
            }
        };
        opts.timeout = timeout;
        opts.attempts = 1;
        // Names are always absolute (a final dot is added): no search list.
        opts.ndots = 0;
        opts.cache_size = 256;
        let auth = MessageAuthenticator::new(config, opts).map_err(|e| Error::Start {
            resolver: label.clone(),
            reason: e.to_string(),
        })?;
        Ok(Resolver {
            auth,
            label,
            timeout,
            servers,
        })
    }

    /// Which resolver this is, for messages: "127.0.0.1:5353" or "system: 192.0.2.53".
    pub fn label(&self) -> &str {
        &self.label
    }

    /// mail-auth's authenticator over the same resolver (DKIM, SPF and DMARC verification).
    pub fn authenticator(&self) -> &MessageAuthenticator {
        &self.auth
    }

    fn fail(&self, rtype: &'static str, name: &str, failure: Failure) -> LookupError {
        LookupError::new(rtype, name, failure, &self.label)
    }

    /// Maps hickory's outcome: no records is an answer (`Ok(None)`), anything else a failure.
    fn classify<T>(
        &self,
        rtype: &'static str,
        name: &str,
        result: Result<Result<T, NetError>, tokio::time::error::Elapsed>,
    ) -> Result<Option<T>, LookupError> {
        match result {
            Err(_) => Err(self.fail(rtype, name, Failure::Timeout)),
            Ok(Ok(answer)) => Ok(Some(answer)),
            Ok(Err(e)) => match &e {
                NetError::Dns(DnsError::NoRecordsFound(no)) => match no.response_code {
                    ResponseCode::NXDomain | ResponseCode::NoError => Ok(None),
                    ResponseCode::ServFail => Err(self.fail(rtype, name, Failure::ServFail)),
                    ResponseCode::Refused => Err(self.fail(rtype, name, Failure::Refused)),
                    other => Err(self.fail(rtype, name, Failure::Other(other.to_string()))),
                },
                NetError::Dns(DnsError::ResponseCode(ResponseCode::Refused)) => {
                    Err(self.fail(rtype, name, Failure::Refused))
                }
                NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail)) => {
                    Err(self.fail(rtype, name, Failure::ServFail))
                }
                NetError::Timeout => Err(self.fail(rtype, name, Failure::Timeout)),
                _ => Err(self.fail(rtype, name, Failure::Other(e.to_string()))),
            },
        }
    }

    fn name(&self, rtype: &'static str, name: &str) -> Result<Name, LookupError> {
        let fqdn = if name.ends_with('.') {
            name.to_owned()
        } else {
            format!("{name}.")
        };
        Name::from_str_relaxed(&fqdn).map_err(|e| {
            self.fail(
                rtype,
                name,
                Failure::Other(format!("not a valid DNS name: {e}")),
            )
        })
    }

    /// The TXT records at `name`, each one's strings joined (RFC 7208 §3.3, RFC 6376
    /// §3.6.2.2); empty when the name or the records do not exist.
    ///
    /// # Errors
    /// When no answer came (timeout, REFUSED, SERVFAIL, network).
    pub async fn txt(&self, name: &str) -> Result<Vec<Vec<u8>>, LookupError> {
        let query = self.name("TXT", name)?;
        let result =
            tokio::time::timeout(self.timeout, self.auth.resolver().txt_lookup(query)).await;
        let Some(lookup) = self.classify("TXT", name, result)? else {
            return Ok(Vec::new());
        };
        Ok(lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(txt) => Some(
                    txt.txt_data
                        .iter()
                        .flat_map(|s| s.iter().copied())
                        .collect(),
                ),
                _ => None,
            })
            .collect())
    }

    /// The MX records of `domain`, most preferred first; empty when there are none.
    ///
    /// # Errors
    /// When no answer came.
    pub async fn mx(&self, domain: &str) -> Result<Vec<Mx>, LookupError> {
        Ok(self.mx_with_ttl(domain).await?.0)
    }

    /// [`Resolver::mx`] with the answer's TTL (the smallest of its records), for callers that
    /// cache it.
    ///
    /// # Errors
    /// When no answer came.
    pub async fn mx_with_ttl(
        &self,
        domain: &str,
    ) -> Result<(Vec<Mx>, Option<Duration>), LookupError> {
        let query = self.name("MX", domain)?;
        let result =
            tokio::time::timeout(self.timeout, self.auth.resolver().mx_lookup(query)).await;
        let Some(lookup) = self.classify("MX", domain, result)? else {
            return Ok((Vec::new(), None));
        };
        let ttl = lookup
            .answers()
            .iter()
            .filter(|r| matches!(r.data, RData::MX(_)))
            .map(|r| r.ttl)
            .min()
            .map(|s| Duration::from_secs(u64::from(s)));
        let mut mx: Vec<Mx> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::MX(mx) => Some(Mx {
                    preference: mx.preference,
                    exchange: mx
                        .exchange
                        .to_lowercase()
                        .to_ascii()
                        .trim_end_matches('.')
                        .to_owned(),
                }),
                _ => None,
            })
            .collect();
        mx.sort_by_key(|m| m.preference);
        Ok((mx, ttl))
    }

    /// The IPv4 and IPv6 addresses of `name` (A, then AAAA); empty when it has none.
    ///
    /// # Errors
    /// When no answer came.
    pub async fn addresses(&self, name: &str) -> Result<Vec<std::net::IpAddr>, LookupError> {
        let query = self.name("A", name)?;
        let resolver = self.auth.resolver();
        let result = tokio::time::timeout(self.timeout, resolver.ipv4_lookup(query.clone())).await;
        let mut ips: Vec<std::net::IpAddr> = self
            .classify("A", name, result)?
            .map(|l| {
                l.answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::A(a) => Some(std::net::IpAddr::V4(a.0)),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let result = tokio::time::timeout(self.timeout, resolver.ipv6_lookup(query)).await;
        if let Some(l) = self.classify("AAAA", name, result)? {
            ips.extend(l.answers().iter().filter_map(|r| match &r.data {
                RData::AAAA(a) => Some(std::net::IpAddr::V6(a.0)),
                _ => None,
            }));
        }
        Ok(ips)
    }
}
