//! A token endpoint on loopback for the OAuth2 refresh flow: plain HTTP/1.1 on 127.0.0.1:0 (the
//! only place mailroom accepts a token URL without TLS), answering `grant_type=refresh_token`
//! as Google and Microsoft do: a JSON access token, or `{"error": "invalid_grant"}` with 400.
//! `GET /userinfo` with `Authorization: Bearer TOKEN` answers who the token belongs to, as a
//! provider's userinfo endpoint does: what Dovecot's oauth2 passdb asks to validate a token.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// How the endpoint answers.
#[derive(Debug, Clone)]
pub struct Issuer {
    pub client_id: String,
    pub client_secret: String,
    /// The refresh token it accepts first.
    pub refresh_token: String,
    /// The access token it hands out.
    pub access_token: String,
    pub expires_in: u64,
    /// Whom the access token belongs to (the `email` the userinfo endpoint answers).
    pub user: String,
    /// Hand out a new refresh token with every answer and accept only the newest (Microsoft's
    /// rotation).
    pub rotate: bool,
}

/// A running endpoint and what it saw.
pub struct TokenEndpoint {
    pub url: String,
    requests: Arc<AtomicUsize>,
    forms: Arc<Mutex<Vec<HashMap<String, String>>>>,
}

impl TokenEndpoint {
    pub async fn start(issuer: Issuer) -> TokenEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let forms = Arc::new(Mutex::new(Vec::new()));
        let current = Arc::new(Mutex::new(issuer.refresh_token.clone()));
        let (r, f) = (requests.clone(), forms.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (issuer, current, r, f) =
                    (issuer.clone(), current.clone(), r.clone(), f.clone());
                tokio::spawn(async move {
                    let Some(request) = read_request(&mut stream).await else {
                        return;
                    };
                    let (status, body) = if request.method == "GET" {
                        userinfo(&issuer, request.bearer.as_deref())
                    } else {
                        let n = r.fetch_add(1, Ordering::SeqCst) + 1;
                        f.lock().unwrap().push(request.form.clone());
                        answer(&issuer, &current, &request.form, n)
                    };
                    let reply = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(reply.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        TokenEndpoint {
            url,
            requests,
            forms,
        }
    }

    /// Token requests answered so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Every form received, in order.
    pub fn forms(&self) -> Vec<HashMap<String, String>> {
        self.forms.lock().unwrap().clone()
    }
}

fn answer(
    issuer: &Issuer,
    current: &Mutex<String>,
    form: &HashMap<String, String>,
    n: usize,
) -> (&'static str, String) {
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    let mut current = current.lock().unwrap();
    if field("grant_type") != "refresh_token"
        || field("client_id") != issuer.client_id
        || field("client_secret") != issuer.client_secret
    {
        return (
            "401 Unauthorized",
            r#"{"error":"invalid_client","error_description":"Unauthorized client"}"#.into(),
        );
    }
    if field("refresh_token") != *current {
        return (
            "400 Bad Request",
            r#"{"error":"invalid_grant","error_description":"Token has been expired or revoked."}"#
                .into(),
        );
    }
    let rotated = if issuer.rotate {
        *current = format!("{}-{n}", issuer.refresh_token);
        format!(r#","refresh_token":"{}""#, *current)
    } else {
        String::new()
    };
    (
        "200 OK",
        format!(
            r#"{{"access_token":"{}","expires_in":{},"token_type":"Bearer"{rotated}}}"#,
            issuer.access_token, issuer.expires_in
        ),
    )
}

fn userinfo(issuer: &Issuer, bearer: Option<&str>) -> (&'static str, String) {
    if bearer == Some(issuer.access_token.as_str()) {
        (
            "200 OK",
            format!(r#"{{"email":"{}","active":"true"}}"#, issuer.user),
        )
    } else {
        ("401 Unauthorized", r#"{"error":"invalid_token"}"#.into())
    }
}

struct Request {
    method: String,
    bearer: Option<String>,
    form: HashMap<String, String>,
}

async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        let Some(at) = text.find("\r\n\r\n") else {
            continue;
        };
        let length: usize = text[..at]
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        if buf.len() < at + 4 + length {
            continue;
        }
        let body = String::from_utf8_lossy(&buf[at + 4..at + 4 + length]).into_owned();
        let method = text.split(' ').next().unwrap_or_default().to_owned();
        let bearer = text[..at].lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("authorization")
                .then(|| v.trim().strip_prefix("Bearer ").map(str::to_owned))?
        });
        let form = body
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (decode(k), decode(v)))
            .collect();
        return Some(Request {
            method,
            bearer,
            form,
        });
    }
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        } else if bytes[i] == b'+' {
            out.push(b' ');
            i += 1;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
