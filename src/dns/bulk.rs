//! Many MX lookups in a row, for the background resolution of recipient domains to mailbox
//! providers (`pipeline::providers`): one question per UDP datagram to the same resolvers as
//! [`Resolver`], on a few reused sockets, each answer decoded with hickory's message codec.
//!
//! Why not [`Resolver::mx_with_ttl`]: while 100,000 domains resolved during a send, `perf` found
//! hickory's resolver (its name-server pool, retry streams and cache) taking about a quarter of
//! the CPU of the run, on the order of 100 µs a lookup.
//! This client does one `send` and one `recv` per lookup and nothing else; an answer too large
//! for a datagram (truncated) is asked again over TCP. Errors read like [`Resolver`]'s.
//!
//! An answer is taken only from the resolver's address (connected socket), with the query's
//! random id, as a response, and for the same question; anything else on the socket is
//! dropped and the wait goes on. Sockets are reused, so the source port is not fresh per
//! query: acceptable for an answer that only labels a provider in reports and never decides
//! where or whether mail is sent. It must not be used for the authentication checks.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use mail_auth::hickory_resolver::proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use mail_auth::hickory_resolver::proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UdpSocket;

use super::{Failure, LookupError, Mx, Resolver};

/// The EDNS payload size offered (RFC 9715's recommendation): larger answers come back
/// truncated and go to [`Resolver`] over TCP.
const UDP_PAYLOAD: u16 = 1232;
/// Room for any datagram a resolver may send (a longer one is truncated by the kernel and
/// fails to decode: dropped like any other garbage).
const RECV_BUFFER: usize = 4096;
/// Idle sockets kept per server (one per lookup in flight is enough).
const POOL: usize = 64;

/// MX lookups over plain UDP datagrams (see the module doc). Cheap to share: the sockets are
/// pooled behind a lock held only to take or return one.
pub struct BulkMx {
    /// The resolvers' UDP addresses, tried in order.
    servers: Vec<SocketAddr>,
    /// One lookup's whole budget, shared among the servers tried.
    timeout: Duration,
    /// Idle connected sockets, one list per server.
    idle: Vec<Mutex<Vec<UdpSocket>>>,
    /// Which resolver this is, for errors (as [`Resolver::label`]).
    label: String,
}

impl std::fmt::Debug for BulkMx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkMx")
            .field("servers", &self.servers)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// What one exchange with one server gave.
enum Exchange {
    Answer(Vec<Mx>, Option<Duration>),
    /// No usable answer from this server (try the next).
    Failed(Failure),
}

impl BulkMx {
    /// A client asking the same servers as `resolver`, within its timeout.
    pub fn new(resolver: &Resolver) -> BulkMx {
        let servers = resolver.servers.clone();
        BulkMx {
            idle: servers.iter().map(|_| Mutex::new(Vec::new())).collect(),
            servers,
            timeout: resolver.timeout,
            label: resolver.label.clone(),
        }
    }

    fn fail(&self, name: &str, failure: Failure) -> LookupError {
        LookupError::new("MX", name, failure, &self.label)
    }

    /// The MX records of `domain` (most preferred first) and their TTL, as
    /// [`Resolver::mx_with_ttl`] gives them: empty when the domain or its records do not exist.
    ///
    /// # Errors
    /// When no server answered usably within the timeout: the last server's failure.
    pub async fn mx_with_ttl(
        &self,
        domain: &str,
    ) -> Result<(Vec<Mx>, Option<Duration>), LookupError> {
        let name = match Name::from_str_relaxed(format!("{}.", domain.trim_end_matches('.'))) {
            Ok(n) => n,
            Err(e) => {
                let why = format!("not a valid DNS name: {e}");
                return Err(self.fail(domain, Failure::Other(why)));
            }
        };
        let share = self.timeout / u32::try_from(self.servers.len().max(1)).unwrap_or(u32::MAX);
        let mut last = Failure::Other("no DNS server configured".into());
        for server in 0..self.servers.len() {
            let deadline = tokio::time::Instant::now() + share;
            match self.exchange(server, &name, deadline).await {
                Exchange::Answer(mut mx, ttl) => {
                    mx.sort_by_key(|m| m.preference);
                    return Ok((mx, ttl));
                }
                Exchange::Failed(why) => last = why,
            }
        }
        Err(self.fail(domain, last))
    }

    /// One question to one server, answered by `deadline`: over UDP, and over TCP when the
    /// answer did not fit in a datagram.
    async fn exchange(
        &self,
        server: usize,
        name: &Name,
        deadline: tokio::time::Instant,
    ) -> Exchange {
        // `Message::query` draws a random id.
        let mut query = Message::query();
        query.metadata.recursion_desired = true;
        query.add_query(Query::query(name.clone(), RecordType::MX));
        let mut edns = Edns::new();
        edns.set_max_payload(UDP_PAYLOAD);
        query.set_edns(edns);
        let id = query.metadata.id;
        let wire = match query.to_vec() {
            Ok(w) => w,
            Err(e) => return Exchange::Failed(Failure::Other(e.to_string())),
        };
        let mut reply =
            match tokio::time::timeout_at(deadline, self.udp(server, &wire, id, name)).await {
                Err(_) => return Exchange::Failed(Failure::Timeout),
                Ok(Err(e)) => return Exchange::Failed(Failure::Other(e.to_string())),
                Ok(Ok(reply)) => reply,
            };
        if reply.metadata.truncation {
            let addr = self.servers[server];
            reply = match tokio::time::timeout_at(deadline, tcp(addr, &wire, id, name)).await {
                Err(_) => return Exchange::Failed(Failure::Timeout),
                Ok(Err(e)) => return Exchange::Failed(Failure::Other(format!("over TCP: {e}"))),
                Ok(Ok(reply)) => reply,
            };
        }
        match reply.metadata.response_code {
            ResponseCode::NoError | ResponseCode::NXDomain => {}
            ResponseCode::ServFail => return Exchange::Failed(Failure::ServFail),
            ResponseCode::Refused => return Exchange::Failed(Failure::Refused),
            other => return Exchange::Failed(Failure::Other(other.to_string())),
        }
        let mut ttl: Option<u32> = None;
        let mut mx = Vec::new();
        for record in &reply.answers {
            // A CNAME chain's MX records belong to its target: take every MX of the answer.
            if let RData::MX(m) = &record.data {
                ttl = Some(ttl.map_or(record.ttl, |t| t.min(record.ttl)));
                mx.push(Mx {
                    preference: m.preference,
                    exchange: m
                        .exchange
                        .to_lowercase()
                        .to_ascii()
                        .trim_end_matches('.')
                        .to_owned(),
                });
            }
        }
        Exchange::Answer(mx, ttl.map(|s| Duration::from_secs(u64::from(s))))
    }

    /// The query as one datagram and its answer. The socket goes back to the pool only after
    /// an answer: one that timed out (dropped with this future) or failed is closed.
    async fn udp(
        &self,
        server: usize,
        wire: &[u8],
        id: u16,
        name: &Name,
    ) -> std::io::Result<Message> {
        let socket = self.socket(server).await?;
        socket.send(wire).await?;
        let mut buf = vec![0u8; RECV_BUFFER];
        loop {
            // An ICMP "port unreachable" shows here as a refused connection.
            let n = socket.recv(&mut buf).await?;
            // Not ours (a late answer to an earlier query on this socket, or noise): keep
            // waiting for the real one.
            if let Some(reply) = decode(&buf[..n], id, name) {
                self.give_back(server, socket);
                return Ok(reply);
            }
        }
    }

    /// An idle socket connected to `server`, or a new one.
    async fn socket(&self, server: usize) -> std::io::Result<UdpSocket> {
        let pooled = self.idle[server]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        if let Some(s) = pooled {
            return Ok(s);
        }
        let addr = self.servers[server];
        let local: SocketAddr = if addr.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local).await?;
        socket.connect(addr).await?;
        Ok(socket)
    }

    fn give_back(&self, server: usize, socket: UdpSocket) {
        let mut idle = self.idle[server]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < POOL {
            idle.push(socket);
        }
    }
}

/// The query over TCP (RFC 1035 §4.2.2: each message behind its two-byte length), for an
/// answer too large for a datagram. One connection per query: this is the rare case.
async fn tcp(addr: SocketAddr, wire: &[u8], id: u16, name: &Name) -> std::io::Result<Message> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let len = u16::try_from(wire.len()).map_err(|_| bad("query too long"))?;
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let mut framed = Vec::with_capacity(wire.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(wire);
    stream.write_all(&framed).await?;
    // A server may answer with other messages first (RFC 7766 allows out-of-order replies on
    // a reused connection; this one is not reused, but stay strict): read until ours, each
    // read bounded by its two-byte length, the whole exchange by the caller's deadline.
    loop {
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut buf).await?;
        if let Some(reply) = decode(&buf, id, name) {
            return Ok(reply);
        }
    }
}

/// The datagram as the answer to query `id` about `name`'s MX, or `None` when it is not that
/// (undecodable, another id, not a response, another question).
fn decode(datagram: &[u8], id: u16, name: &Name) -> Option<Message> {
    let reply = Message::from_vec(datagram).ok()?;
    let ours = reply.metadata.id == id
        && reply.metadata.message_type == MessageType::Response
        && reply.queries.len() == 1
        && reply.queries[0].query_type() == RecordType::MX
        // Case-insensitive, as DNS names compare.
        && reply.queries[0].name() == name;
    ours.then_some(reply)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use mail_auth::hickory_resolver::proto::rr::Record;
    use mail_auth::hickory_resolver::proto::rr::rdata::MX;

    fn reply_to(query: &Message, exchanges: &[(u16, &str)]) -> Message {
        let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
        reply.add_query(query.queries[0].clone());
        for (pref, host) in exchanges {
            reply.answers.push(Record::from_rdata(
                query.queries[0].name().clone(),
                300,
                RData::MX(MX::new(*pref, Name::from_str_relaxed(host).unwrap())),
            ));
        }
        reply
    }

    fn question(domain: &str) -> Message {
        let mut q = Message::query();
        q.add_query(Query::query(
            Name::from_str_relaxed(domain).unwrap(),
            RecordType::MX,
        ));
        q
    }

    #[test]
    fn only_the_answer_to_this_question_is_taken() {
        let name = Name::from_str_relaxed("example.org.").unwrap();
        let q = question("example.org.");
        let id = q.metadata.id;
        let good = reply_to(&q, &[(10, "mx.example.org.")]).to_vec().unwrap();
        assert!(decode(&good, id, &name).is_some());
        // Names compare without regard to case (a resolver may echo 0x20-mixed case).
        let upper = Name::from_str_relaxed("EXAMPLE.org.").unwrap();
        assert!(decode(&good, id, &upper).is_some());
        // Another id, another question, the query itself (not a response), garbage.
        assert!(decode(&good, id.wrapping_add(1), &name).is_none());
        let mut elsewhere = question("example.net.");
        elsewhere.metadata.id = id;
        let other = reply_to(&elsewhere, &[]).to_vec().unwrap();
        assert!(decode(&other, id, &name).is_none());
        assert!(decode(&q.to_vec().unwrap(), id, &name).is_none());
        assert!(decode(b"\x00\x01garbage", id, &name).is_none());
        assert!(decode(&good[..good.len() - 3], id, &name).is_none());
    }
}
