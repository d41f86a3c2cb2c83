//! DKIM (RFC 6376, and Ed25519 per RFC 8463): the private keys, signing the exact bytes a
//! message is sent as, checking a signature against a published key record, and making new
//! key pairs with the TXT record to publish.
//!
//! Signing and verifying are mail-auth's, relaxed/relaxed: the signature's arithmetic is
//! `ring`'s for RSA and `ed25519-dalek`'s for Ed25519 (see [`SignKey`]). Key generation uses
//! `ring` for Ed25519 and the `rsa` crate for RSA, which ring cannot generate (see
//! [`generate`]).
//!
//! This module owns key loading with its refusals (a missing, unreadable, group- or
//! world-readable, wrong-format or too-short key each has its own error with the fix). It must
//! not do network I/O (the published record reaches it as bytes, from `dns`), and it must never
//! put key material in an error, a `Debug` output or a log line: errors name the file, never
//! its content, and [`Key`] and [`Signer`] print only public facts.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use mail_auth::common::crypto::{Algorithm as SigningAlgorithm, RsaKey, Sha256, SigningKey};
use mail_auth::common::headers::{HeaderWriter as _, Writable};
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, pem::PemObject as _};

/// Headers signed by default (RFC 6376 §5.4.1 recommends what a recipient sees and what
/// identifies the list). A listed header a message lacks is signed as absent, so it cannot be
/// added in transit; `From` is listed twice (over-signed) so a second From cannot be either.
pub const DEFAULT_SIGNED_HEADERS: &[&str] = &[
    "From",
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "List-Id",
    "Feedback-ID",
];

/// The largest key file read: a 16,384-bit RSA key in PEM is under 13 KiB.
const MAX_KEY_FILE: u64 = 64 * 1024;

/// RFC 8301 §3.2: signers MUST use RSA keys of at least 1024 bits and SHOULD use 2048; ring
/// (the signer here) refuses anything under 2048, so mailroom does too.
pub const MIN_RSA_BITS: usize = 2048;

/// Why a key cannot be used, or a signature not made or checked. Never carries key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(
        "DKIM key {}: the file does not exist\n\nCreate one with `mailroom dkim keygen --domain DOMAIN --selector SELECTOR --out {}` and publish the TXT record it prints, or fix [dkim] private_key_file (relative to the folder of campaign.toml).",
        path.display(), path.display()
    )]
    Missing { path: PathBuf },
    #[error("DKIM key {}: cannot read it", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "DKIM key {}: the file is readable by {who} (mode {mode:04o}); a private key must be readable by its owner only\n\nRun `chmod 600 {}`.",
        path.display(), path.display()
    )]
    Exposed {
        path: PathBuf,
        mode: u32,
        who: &'static str,
    },
    #[error(
        "DKIM key {}: {what}\n\nUse an RSA key (PKCS#1 \"BEGIN RSA PRIVATE KEY\" or PKCS#8 \"BEGIN PRIVATE KEY\" PEM, at least {MIN_RSA_BITS} bits) or an Ed25519 key (PKCS#8 PEM, as `openssl genpkey -algorithm ed25519` writes it); `mailroom dkim keygen` makes either.",
        path.display()
    )]
    Format { path: PathBuf, what: String },
    #[error(
        "DKIM key {}: the RSA key has {bits} bits, fewer than the {MIN_RSA_BITS} mailroom signs with (RFC 8301; mailbox providers treat shorter keys as weak)\n\nMake a new key with `mailroom dkim keygen --algorithm rsa2048` (or ed25519), publish its TXT record under a new selector, and point [dkim] at it.",
        path.display()
    )]
    TooShort { path: PathBuf, bits: usize },
    #[error("DKIM signing with d={domain} s={selector} failed: {reason}")]
    Sign {
        domain: String,
        selector: String,
        reason: String,
    },
    #[error("cannot generate a key pair: {reason}")]
    Generate { reason: String },
}

/// Which kind of key, and how long for RSA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum KeyKind {
    Rsa { bits: usize },
    Ed25519,
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyKind::Rsa { bits } => write!(f, "RSA {bits}-bit"),
            KeyKind::Ed25519 => f.write_str("Ed25519"),
        }
    }
}

impl KeyKind {
    /// The `k=` tag of the key record (RFC 6376 §3.6.1, RFC 8463 §4).
    pub fn record_tag(self) -> &'static str {
        match self {
            KeyKind::Rsa { .. } => "rsa",
            KeyKind::Ed25519 => "ed25519",
        }
    }
}

/// A private key ready to sign. `Debug` shows only the kind and the public key.
pub struct Key {
    inner: SignKey,
    kind: KeyKind,
    /// What the record's `p=` must hold: the SubjectPublicKeyInfo DER for RSA (RFC 6376
    /// §3.6.1), the raw 32-byte key for Ed25519 (RFC 8463 §4).
    public: Vec<u8>,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("kind", &self.kind)
            .field("p", &self.public_base64())
            .finish_non_exhaustive()
    }
}

impl Key {
    /// Loads a PEM key file, refusing one that others can read.
    ///
    /// # Errors
    /// [`Error::Missing`], [`Error::Unreadable`], [`Error::Exposed`] (mode & 0o077),
    /// [`Error::Format`], [`Error::TooShort`].
    pub fn load(path: &Path) -> Result<Key, Error> {
        let unreadable = |source| Error::Unreadable {
            path: path.to_owned(),
            source,
        };
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Missing {
                    path: path.to_owned(),
                });
            }
            Err(e) => return Err(unreadable(e)),
        };
        if !meta.is_file() {
            return Err(Error::Format {
                path: path.to_owned(),
                what: "not a regular file".into(),
            });
        }
        check_mode(path, &meta)?;
        let read = crate::bounded::read_file(path, MAX_KEY_FILE).map_err(unreadable)?;
        let Some(mut pem) = read else {
            return Err(Error::Format {
                path: path.to_owned(),
                what: format!("larger than {} KiB, so not a key file", MAX_KEY_FILE / 1024),
            });
        };
        let key = Key::from_pem(&pem).map_err(|problem| match problem {
            Problem::TooShort(bits) => Error::TooShort {
                path: path.to_owned(),
                bits,
            },
            Problem::Format(what) => Error::Format {
                path: path.to_owned(),
                what,
            },
        });
        // The PEM text is the secret: overwrite it before the buffer is freed.
        zeroize::Zeroize::zeroize(&mut pem);
        key
    }

    /// Parses a PEM private key (PKCS#1 RSA, PKCS#8 RSA or Ed25519).
    fn from_pem(pem: &[u8]) -> Result<Key, Problem> {
        // The parser's own errors can quote lines of the file: never shown.
        let mut der = PrivateKeyDer::from_pem_slice(pem).map_err(|_| {
            Problem::Format(
                "no PEM private key in the file (\"-----BEGIN ... PRIVATE KEY-----\")".into(),
            )
        })?;
        let key = Key::from_der(&der);
        // The decoded key is the same secret as the PEM.
        zeroize::Zeroize::zeroize(&mut der);
        key
    }

    fn from_der(der: &PrivateKeyDer<'_>) -> Result<Key, Problem> {
        match der {
            PrivateKeyDer::Pkcs1(k) => rsa_key(der, k.secret_pkcs1_der(), false),
            PrivateKeyDer::Pkcs8(k) => {
                let bytes = k.secret_pkcs8_der();
                if contains(bytes, OID_ED25519) {
                    use ed25519_dalek::pkcs8::DecodePrivateKey as _;
                    // PKCS#8 v1 (the seed, as `openssl genpkey` writes it) or v2 (RFC 5958,
                    // with the public key, which must then be the seed's). The constructed
                    // public-key tag (A1) that ring releases before 0.16.20 wrote is refused.
                    let key = ed25519_dalek::SigningKey::from_pkcs8_der(bytes).map_err(|_| {
                        Problem::Format("the Ed25519 PKCS#8 key does not parse".into())
                    })?;
                    let public = key.verifying_key().to_bytes().to_vec();
                    Ok(Key {
                        inner: SignKey::Ed25519(key),
                        kind: KeyKind::Ed25519,
                        public,
                    })
                } else if contains(bytes, OID_RSA) {
                    rsa_key(der, bytes, true)
                } else if contains(bytes, OID_EC) {
                    Err(Problem::Format(
                        "an elliptic-curve (ECDSA) key, which DKIM does not define".into(),
                    ))
                } else {
                    Err(Problem::Format(
                        "a PKCS#8 key of an unknown algorithm (neither RSA nor Ed25519)".into(),
                    ))
                }
            }
            PrivateKeyDer::Sec1(_) => Err(Problem::Format(
                "an elliptic-curve (ECDSA) key, which DKIM does not define".into(),
            )),
            _ => Err(Problem::Format("a private key of an unknown format".into())),
        }
    }

    /// RSA (with its size) or Ed25519.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The `p=` value of the key record: base64 of the SubjectPublicKeyInfo (RSA) or of the
    /// raw key (Ed25519).
    pub fn public_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.public)
    }

    /// The TXT record to publish at `selector._domainkey.domain`.
    pub fn record(&self, domain: &str, selector: &str) -> TxtRecord {
        TxtRecord {
            name: format!("{selector}._domainkey.{domain}"),
            value: format!(
                "v=DKIM1; k={}; p={}",
                self.kind.record_tag(),
                self.public_base64()
            ),
        }
    }
}

/// A private key as mail-auth's signer uses it.
///
/// Ed25519 goes through `ed25519-dalek` rather than mail-auth's own ring key: a signature
/// (one fixed-base scalar multiplication) took 20 µs against ring's 27 µs on the benchmark
/// host, and in an Ed25519-signed send the signature was a fifth of the process's CPU time.
/// Ed25519 is deterministic, so both give the same bytes (a test checks it).
enum SignKey {
    Rsa(RsaKey<Sha256>),
    /// Zeroized when dropped.
    Ed25519(ed25519_dalek::SigningKey),
}

impl SigningKey for SignKey {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        match self {
            SignKey::Rsa(key) => key.sign(input),
            SignKey::Ed25519(key) => {
                use ed25519_dalek::Signer as _;
                // RFC 8463 §3: Ed25519 signs the SHA-256 hash of the data (`Hasher`), not the
                // data.
                Ok(key.sign(self.hash(input).as_ref()).to_bytes().to_vec())
            }
        }
    }

    fn algorithm(&self) -> SigningAlgorithm {
        match self {
            SignKey::Rsa(_) => SigningAlgorithm::RsaSha256,
            SignKey::Ed25519(_) => SigningAlgorithm::Ed25519Sha256,
        }
    }
}

/// Why PEM bytes are not a usable key (the caller adds the path).
enum Problem {
    Format(String),
    TooShort(usize),
}

const OID_RSA: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];
const OID_ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
const OID_EC: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn rsa_key(der: &PrivateKeyDer<'_>, bytes: &[u8], pkcs8: bool) -> Result<Key, Problem> {
    // ring checks the key first, so its refusal says why (too small, bad encoding); mail-auth
    // would only pass the same refusal on as a string.
    let parsed = if pkcs8 {
        ring::signature::RsaKeyPair::from_pkcs8(bytes)
    } else {
        ring::signature::RsaKeyPair::from_der(bytes)
    };
    let pair = match parsed {
        Ok(pair) => pair,
        // KeyRejected displays its fixed description ("TooSmall", "InvalidEncoding", ...).
        Err(e) if e.to_string() == "TooSmall" => {
            return Err(Problem::TooShort(rsa_bits(bytes).unwrap_or(0)));
        }
        Err(e) => {
            return Err(Problem::Format(format!("the RSA key does not parse ({e})")));
        }
    };
    use ring::signature::KeyPair as _;
    let bits = pair.public().modulus_len() * 8;
    let public = spki_rsa(pair.public_key().as_ref());
    let inner = RsaKey::<Sha256>::from_key_der(der.clone_key())
        .map_err(|_| Problem::Format("the RSA key does not parse".into()))?;
    Ok(Key {
        inner: SignKey::Rsa(inner),
        kind: KeyKind::Rsa { bits },
        public,
    })
}

/// The modulus length of an RSA private key ring refused as too small, read from its DER (the
/// first INTEGER after the version is the modulus, in PKCS#1 and inside PKCS#8 alike).
fn rsa_bits(der: &[u8]) -> Option<usize> {
    // PKCS#8 wraps the PKCS#1 key in an OCTET STRING after the algorithm identifier.
    let pkcs1 = match der.windows(OID_RSA.len()).position(|w| w == OID_RSA) {
        Some(at) => {
            let rest = &der[at + OID_RSA.len()..];
            let octets = rest.iter().position(|b| *b == 0x04)?;
            let (_, inner) = der_header(&rest[octets..])?;
            inner
        }
        None => der,
    };
    let (_, seq) = der_header(pkcs1)?;
    let (_, version_and_rest) = der_header(seq)?;
    // Skip the version INTEGER (one byte of content).
    let after_version = seq.get(2 + version_and_rest.len().min(1)..)?;
    let (len, modulus) = der_header(after_version)?;
    let modulus = modulus.get(..len)?;
    let leading = modulus.iter().take_while(|b| **b == 0).count();
    Some((len - leading) * 8)
}

/// Reads one DER tag + length; returns the content length and the bytes from the content on.
fn der_header(bytes: &[u8]) -> Option<(usize, &[u8])> {
    let first = *bytes.get(1)?;
    if first & 0x80 == 0 {
        return Some((usize::from(first), bytes.get(2..)?));
    }
    let n = usize::from(first & 0x7f);
    let mut len = 0usize;
    for b in bytes.get(2..2 + n)? {
        len = len.checked_mul(256)? + usize::from(*b);
    }
    Some((len, bytes.get(2 + n..)?))
}

/// DER length octets.
fn der_len(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// Wraps a PKCS#1 RSAPublicKey in a SubjectPublicKeyInfo (RFC 5280 §4.1), the form RFC 6376
/// §3.6.1 puts in `p=`.
fn spki_rsa(rsa_public_key: &[u8]) -> Vec<u8> {
    const ALGORITHM: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bit_string = vec![0x03];
    der_len(rsa_public_key.len() + 1, &mut bit_string);
    bit_string.push(0);
    bit_string.extend_from_slice(rsa_public_key);
    let mut out = vec![0x30];
    der_len(ALGORITHM.len() + bit_string.len(), &mut out);
    out.extend_from_slice(ALGORITHM);
    out.extend_from_slice(&bit_string);
    out
}

#[cfg(unix)]
fn check_mode(path: &Path, meta: &std::fs::Metadata) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    let who = match (mode & 0o070 != 0, mode & 0o007 != 0) {
        (true, true) => "its group and everyone",
        (false, true) => "everyone",
        _ => "its group",
    };
    Err(Error::Exposed {
        path: path.to_owned(),
        mode,
        who,
    })
}

#[cfg(not(unix))]
fn check_mode(_: &Path, _: &std::fs::Metadata) -> Result<(), Error> {
    Ok(())
}

/// A DNS TXT record to publish: its name and its value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TxtRecord {
    /// Without the final dot, e.g. `mail._domainkey.example.com`.
    pub name: String,
    pub value: String,
}

impl TxtRecord {
    /// The value cut into the character-strings of one TXT record: each at most 255 octets
    /// (RFC 1035 §3.3), which receivers join without a separator (RFC 6376 §3.6.2.2).
    pub fn strings(&self) -> Vec<&str> {
        // The value is ASCII (tags and base64), so any byte is a char boundary.
        self.value
            .as_bytes()
            .chunks(255)
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect()
    }

    /// The record in zone-file syntax, ready to paste into a zone or a DNS provider's form.
    pub fn zone_line(&self) -> String {
        let quoted: Vec<String> = self.strings().iter().map(|s| format!("\"{s}\"")).collect();
        format!("{}. 3600 IN TXT {}", self.name, quoted.join(" "))
    }
}

/// One signature to add: which key, for which domain and selector.
#[derive(Debug)]
pub struct SignatureSpec {
    pub domain: String,
    pub selector: String,
    pub key: Key,
}

/// Signs messages with one or two keys (RSA + Ed25519 dual signing, RFC 8463 §1: receivers
/// that do not know Ed25519 use the RSA signature). Cheap to share across threads.
pub struct Signer {
    signers: Vec<(DkimSigner<SignKey, Done>, Public)>,
}

/// What a signature is, without its key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Public {
    pub domain: String,
    pub selector: String,
    pub kind: KeyKind,
    /// The `p=` value the published record must carry.
    pub p: String,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list: Vec<&Public> = self.signers.iter().map(|(_, p)| p).collect();
        f.debug_struct("Signer").field("signatures", &list).finish()
    }
}

impl Signer {
    /// A signer adding one DKIM-Signature per spec, over `headers` (names, in order; repeat a
    /// name to over-sign it), relaxed/relaxed.
    pub fn new(specs: Vec<SignatureSpec>, headers: &[String]) -> Signer {
        let signers = specs
            .into_iter()
            .map(|spec| {
                let public = Public {
                    domain: spec.domain.clone(),
                    selector: spec.selector.clone(),
                    kind: spec.key.kind,
                    p: spec.key.public_base64(),
                };
                let signer = DkimSigner::from_key(spec.key.inner)
                    .domain(spec.domain)
                    .selector(spec.selector)
                    .headers(headers.iter().cloned())
                    .header_canonicalization(Canonicalization::Relaxed)
                    .body_canonicalization(Canonicalization::Relaxed);
                (signer, public)
            })
            .collect();
        Signer { signers }
    }

    /// The signatures this signer adds, in header order.
    pub fn signatures(&self) -> impl Iterator<Item = &Public> {
        self.signers.iter().map(|(_, p)| p)
    }

    /// The DKIM-Signature header lines for `message` (CRLF-terminated, folded): prepended to
    /// the message, the result is what is sent. Every signature covers `message` only, so
    /// each verifies on its own.
    ///
    /// # Errors
    /// [`Error::Sign`] (the key is checked at load, so this is not expected).
    pub fn headers_for(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        let mut out = Vec::with_capacity(self.signers.len() * 600);
        for (signer, public) in &self.signers {
            let signature = signer.sign(message).map_err(|e| Error::Sign {
                domain: public.domain.clone(),
                selector: public.selector.clone(),
                reason: e.to_string(),
            })?;
            signature.write_header(&mut out);
        }
        Ok(out)
    }

    /// Each signature's DKIM-Signature header line for `message`, separately (the key check
    /// verifies each against its own published record).
    ///
    /// # Errors
    /// As [`Signer::headers_for`].
    pub fn each_header(&self, message: &[u8]) -> Result<Vec<(&Public, Vec<u8>)>, Error> {
        self.signers
            .iter()
            .map(|(signer, public)| {
                let signature = signer.sign(message).map_err(|e| Error::Sign {
                    domain: public.domain.clone(),
                    selector: public.selector.clone(),
                    reason: e.to_string(),
                })?;
                let mut out = Vec::with_capacity(600);
                signature.write_header(&mut out);
                Ok((public, out))
            })
            .collect()
    }

    /// `message` with its DKIM-Signature headers in front.
    ///
    /// # Errors
    /// As [`Signer::headers_for`].
    pub fn sign(&self, message: Vec<u8>) -> Result<Vec<u8>, Error> {
        let mut signed = self.headers_for(&message)?;
        signed.reserve(message.len());
        signed.extend_from_slice(&message);
        Ok(signed)
    }
}

/// Key algorithms `mailroom dkim keygen` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Algorithm {
    Rsa2048,
    Ed25519,
}

/// A new private key as PKCS#8 PEM (the secret; write it, never print it) and its [`Key`].
pub struct Generated {
    pub pem: String,
    pub key: Key,
}

impl fmt::Debug for Generated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Generated")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Makes a new key pair.
///
/// Ed25519 comes from ring. ring cannot generate RSA keys, so RSA comes from the `rsa` crate,
/// used for generation only: its advisory RUSTSEC-2023-0071 (the "Marvin" attack) is a timing
/// side channel in RSA *decryption*, which mailroom never performs with it; RSA signing uses
/// ring.
///
/// # Errors
/// [`Error::Generate`] when the system's random source fails.
pub fn generate(algorithm: Algorithm) -> Result<Generated, Error> {
    let der: Vec<u8> = match algorithm {
        Algorithm::Ed25519 => {
            let rng = ring::rand::SystemRandom::new();
            let v2 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| {
                Error::Generate {
                    reason: "the system random source failed".into(),
                }
            })?;
            // ring writes PKCS#8 v2 (RFC 5958, with the public key), which OpenSSL 3.0 cannot
            // read; write v1 as `openssl genpkey` does: the same 32-byte seed, which ring's
            // fixed v2 layout holds at bytes 16..48 (after the algorithm and two headers).
            let seed = v2.as_ref().get(16..48).ok_or_else(|| Error::Generate {
                reason: "unexpected PKCS#8 layout from ring".into(),
            })?;
            let mut v1 = ED25519_PKCS8_V1_PREFIX.to_vec();
            v1.extend_from_slice(seed);
            v1
        }
        Algorithm::Rsa2048 => {
            use rsa::pkcs8::EncodePrivateKey as _;
            let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).map_err(|e| {
                Error::Generate {
                    reason: e.to_string(),
                }
            })?;
            key.to_pkcs8_der()
                .map_err(|e| Error::Generate {
                    reason: e.to_string(),
                })?
                .as_bytes()
                .to_vec()
        }
    };
    let pem = pem_encode("PRIVATE KEY", &der);
    let key = Key::from_pem(pem.as_bytes()).map_err(|_| Error::Generate {
        reason: "the new key does not load (a bug in mailroom)".into(),
    })?;
    Ok(Generated { pem, key })
}

/// PKCS#8 v1 of an Ed25519 key up to its 32-byte seed (RFC 8410 §7).
const ED25519_PKCS8_V1_PREFIX: &[u8] = &[
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Whether `a` and `b` are aligned in the sense mailroom checks offline: equal, or one a
/// parent domain of the other (DMARC relaxed alignment as it works out when both sit under
/// the same registered domain; the DNS preflight checks the real organisational domain).
pub fn is_aligned(a: &str, b: &str) -> bool {
    let a = a.trim_end_matches('.').to_ascii_lowercase();
    let b = b.trim_end_matches('.').to_ascii_lowercase();
    let under = |child: &str, parent: &str| {
        child
            .strip_suffix(parent)
            .is_some_and(|rest| rest.ends_with('.'))
    };
    !a.is_empty() && (a == b || under(&a, &b) || under(&b, &a))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A key path that is not a regular file (a folder here) is named as such before anything
    /// tries to read it; a read that fails for a file (permissions for a non-root user, an I/O
    /// error) is `Unreadable` with its cause, which root cannot provoke in a test.
    #[test]
    fn a_key_path_that_is_not_a_file_is_named_as_such() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        std::fs::create_dir(&key).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o700)).unwrap();
        match Key::load(&key) {
            Err(e @ Error::Format { .. }) => {
                assert!(e.to_string().contains("not a regular file"), "{e}");
                assert!(e.to_string().contains("key.pem"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_key_file_over_64_kib_is_refused_and_the_key_alone_loads() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        let pem = generate(Algorithm::Ed25519).unwrap().pem;
        // A real key followed by padding: a file of this size is not a key file.
        let padded = format!("{pem}{}", "\n".repeat(64 * 1024));
        std::fs::write(&key, padded).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        match Key::load(&key) {
            Err(e @ Error::Format { .. }) => {
                assert!(e.to_string().contains("larger than 64 KiB"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        // The same key alone loads.
        std::fs::write(&key, &pem).unwrap();
        assert_eq!(Key::load(&key).unwrap().kind(), KeyKind::Ed25519);
    }

    #[test]
    fn aligned_means_equal_or_parent() {
        assert!(is_aligned("example.com", "EXAMPLE.com."));
        assert!(is_aligned("news.example.com", "example.com"));
        assert!(is_aligned("example.com", "a.b.example.com"));
        assert!(!is_aligned("example.com", "badexample.com"));
        assert!(!is_aligned("example.com", "example.org"));
        assert!(!is_aligned("", "example.org"));
    }

    #[test]
    fn generated_keys_load_sign_and_describe_themselves() {
        let ed = generate(Algorithm::Ed25519).unwrap();
        assert_eq!(ed.key.kind(), KeyKind::Ed25519);
        // The raw 32-byte key: 44 base64 characters.
        assert_eq!(ed.key.public_base64().len(), 44);
        let rec = ed.key.record("example.com", "ed");
        assert_eq!(rec.name, "ed._domainkey.example.com");
        assert!(rec.value.starts_with("v=DKIM1; k=ed25519; p="));
        assert_eq!(rec.strings().len(), 1);
        let debug = format!("{ed:?}");
        assert!(!debug.contains("PRIVATE"), "{debug}");
    }

    /// The Ed25519 signatures are ed25519-dalek's: they must be the bytes ring (mail-auth's own
    /// key) makes over the same SHA-256 of the data, for a PKCS#8 v1 key (`openssl genpkey`)
    /// and a v2 key (ring's, with the public key).
    #[test]
    fn ed25519_signatures_are_the_bytes_ring_makes() {
        let rng = ring::rand::SystemRandom::new();
        let v2 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let fixture = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dkim/ed25519.pem"),
        )
        .unwrap();
        let v1 = PrivateKeyDer::from_pem_slice(&fixture).unwrap();
        let PrivateKeyDer::Pkcs8(v1) = v1 else {
            panic!("the fixture is PKCS#8")
        };
        for der in [v1.secret_pkcs8_der(), v2.as_ref()] {
            let key = Key::from_pem(pem_encode("PRIVATE KEY", der).as_bytes())
                .ok()
                .unwrap();
            let pair = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).unwrap();
            use ring::signature::KeyPair as _;
            assert_eq!(key.public, pair.public_key().as_ref());
            for data in [&b""[..], b"from:a@example.com\r\n", &[0xff; 3000]] {
                let ours = key.inner.sign(data).unwrap();
                let digest = ring::digest::digest(&ring::digest::SHA256, data);
                assert_eq!(ours, pair.sign(digest.as_ref()).as_ref());
            }
        }
    }

    /// A PKCS#8 v2 key whose public key is not its seed's is refused, not used to sign with a
    /// key that no record will match.
    #[test]
    fn an_ed25519_key_with_a_foreign_public_key_is_refused() {
        let rng = ring::rand::SystemRandom::new();
        let a = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let b = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        // ring's fixed v2 layout ends with the 32-byte public key.
        let mut der = a.as_ref().to_vec();
        let n = der.len();
        der[n - 32..].copy_from_slice(&b.as_ref()[n - 32..]);
        match Key::from_pem(pem_encode("PRIVATE KEY", &der).as_bytes()) {
            Err(Problem::Format(what)) => assert!(what.contains("Ed25519"), "{what}"),
            Err(Problem::TooShort(_)) => panic!("TooShort"),
            Ok(key) => panic!("accepted: {key:?}"),
        }
    }

    #[test]
    fn long_records_split_into_255_byte_strings() {
        let rec = TxtRecord {
            name: "s._domainkey.example.com".into(),
            value: "x".repeat(600),
        };
        let s = rec.strings();
        assert_eq!(
            s.iter().map(|s| s.len()).collect::<Vec<_>>(),
            [255, 255, 90]
        );
        assert!(
            rec.zone_line()
                .starts_with("s._domainkey.example.com. 3600 IN TXT \"x")
        );
    }

    #[test]
    fn spki_wraps_rsa_public_keys_as_openssl_does() {
        // A 2048-bit RSAPublicKey is 270 bytes; its SPKI is 294 (the "MIIBIjAN" prefix).
        let inner = {
            let mut v = vec![0x30, 0x82, 0x01, 0x0a];
            v.resize(270, 0);
            v
        };
        let spki = spki_rsa(&inner);
        assert_eq!(spki.len(), 294);
        assert!(
            base64::engine::general_purpose::STANDARD
                .encode(&spki)
                .starts_with("MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A")
        );
    }

    #[test]
    fn garbage_is_a_format_error_without_its_content() {
        let secret = b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0c2VjcmV0\n-----END PRIVATE KEY-----\n";
        let Err(Problem::Format(what)) = Key::from_pem(secret) else {
            panic!("accepted garbage");
        };
        assert!(!what.contains("c2Vj"), "{what}");
        assert!(matches!(Key::from_pem(b"hello"), Err(Problem::Format(_))));
    }
}
