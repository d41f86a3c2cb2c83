//! The bounded IMAP response reader: turns the server's bytes into one response at a time (a
//! line and the literals it announces, RFC 3501 §4.3) while holding the server to [`Limits`].
//!
//! It owns the byte budget of the command in progress and knows which literal is the message
//! (`BODY[] {n}` in an untagged FETCH): that one is kept, up to [`Limits::message`]; every other
//! byte (lines, untagged data, other literals) counts against [`Limits::command`] and is dropped
//! as soon as its response has been looked at. It must never hold more than one response's
//! text and one message, never read past a cap to find out how far the server would go, and
//! never know what a command means: `imap.rs` decides that.
//!
//! Bounds, for any byte stream (the property tests in this file check them):
//! - one line segment (up to and including its LF, literals excluded) ≤ [`Limits::line`];
//! - bytes consumed between two [`Reader::start_command`] calls, not counting kept messages,
//!   ≤ [`Limits::command`], so a response's text is ≤ that too;
//! - a kept message ≤ [`Limits::message`]; a larger one is refused from its `{n}` header,
//!   before any of it is read (the stream is then mid-literal: drop the connection).

use std::io;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// What one server may make us read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Longest line segment, CRLF included, literals excluded.
    pub line: usize,
    /// Largest message (`BODY[]` literal) kept.
    pub message: u64,
    /// Bytes per command that are not the kept message: the tagged reply, every untagged
    /// response and every other literal.
    pub command: u64,
    /// Longest wait for the next bytes; a stalled server ends the import.
    pub idle: Duration,
}

/// The caps `bounces import --imap` uses (documented in docs/bounces.md, "IMAP limits").
///
/// No IMAP line mailroom needs is near 64 KiB (the longest are CAPABILITY and FLAGS, a few
/// hundred bytes), and no reply but the message is near 4 MiB (a size listing of
/// `LIST_BATCH` messages is about 50 KiB). 25 MiB is above any bounce (Postfix returns at most
/// 50 kB of the original, `bounce_size_limit`; Exim 100 kB; a complaint carries one newsletter)
/// and at the common provider limit; it is also what keeps the import under 200 MiB, because
/// parsing a text or HTML message takes 4-5 times its size (measured: 145 MiB peak for 25 MiB
/// of quoted-printable HTML).
pub(crate) const LIMITS: Limits = Limits {
    line: 64 << 10,
    message: 25 << 20,
    command: 4 << 20,
    idle: Duration::from_secs(60),
};

/// One response: a line with the literals it announced.
#[derive(Debug, Default)]
pub(crate) struct Response {
    /// The response without line ends; each literal is replaced by `{}`.
    pub text: Vec<u8>,
    /// The `BODY[]` literal of an untagged FETCH, when the caller asked for one.
    pub body: Option<Vec<u8>>,
}

/// Why a response could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("connection closed")]
    Closed,
    #[error("no data for {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("line longer than {limit} bytes")]
    LineTooLong { limit: usize },
    #[error("more than {limit} bytes for one command")]
    CommandTooLarge { limit: u64 },
    /// The `BODY[]` literal announced `size` bytes; none of it was read, so the stream is in
    /// the middle of a literal and the connection cannot be used again.
    #[error("message of {size} bytes, over the {limit}-byte cap")]
    MessageTooLarge { size: u64, limit: u64 },
}

/// Reads responses within [`Limits`]; one per connection.
#[derive(Debug)]
pub(crate) struct Reader {
    limits: Limits,
    /// Bytes of the current command counted against `limits.command`.
    used: u64,
}

impl Reader {
    pub(crate) fn new(limits: Limits) -> Self {
        Reader { limits, used: 0 }
    }

    /// Starts the budget of a new command (or of the greeting).
    pub(crate) fn start_command(&mut self) {
        self.used = 0;
    }

    /// Reads one response. With `want_body`, the first `BODY[]` literal of an untagged
    /// response is kept in [`Response::body`]; any other literal is read and dropped.
    ///
    /// # Errors
    /// [`ReadError`]: after `MessageTooLarge` (and after any error but a cap reached between
    /// responses) the stream is not at a response boundary: drop it.
    pub(crate) async fn read<R>(
        &mut self,
        r: &mut R,
        want_body: bool,
    ) -> Result<Response, ReadError>
    where
        R: AsyncBufRead + Unpin + ?Sized,
    {
        let mut response = Response::default();
        loop {
            let start = response.text.len();
            self.read_segment(r, &mut response.text).await?;
            while response
                .text
                .last()
                .is_some_and(|&b| b == b'\n' || b == b'\r')
            {
                response.text.pop();
            }
            let Some((open, size)) = literal_at_end(&response.text[start..]) else {
                return Ok(response);
            };
            // `{}` is shorter than `{n}`, so the text stays within the bytes counted for it.
            response.text.truncate(start + open);
            let is_body = want_body
                && response.body.is_none()
                && response.text.starts_with(b"* ")
                && ends_with_body_item(&response.text);
            response.text.extend_from_slice(b"{}");
            if is_body {
                if size > self.limits.message {
                    return Err(ReadError::MessageTooLarge {
                        size,
                        limit: self.limits.message,
                    });
                }
                response.body = Some(self.keep(r, size).await?);
            } else {
                if size > self.limits.command.saturating_sub(self.used) {
                    return Err(ReadError::CommandTooLarge {
                        limit: self.limits.command,
                    });
                }
                self.discard(r, size).await?;
            }
        }
    }

    /// Appends one line segment, up to and including its LF, to `out`; reads no byte past a
    /// cap.
    async fn read_segment<R>(&mut self, r: &mut R, out: &mut Vec<u8>) -> Result<(), ReadError>
    where
        R: AsyncBufRead + Unpin + ?Sized,
    {
        let mut len = 0usize;
        loop {
            let line_room = self.limits.line.saturating_sub(len);
            let budget_room = self.limits.command.saturating_sub(self.used);
            let room = usize::try_from(budget_room).map_or(line_room, |b| b.min(line_room));
            let (taken, complete) = {
                let buf = fill(r, self.limits.idle).await?;
                if buf.is_empty() {
                    return Err(ReadError::Closed);
                }
                let window = &buf[..buf.len().min(room)];
                match window.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        out.extend_from_slice(&window[..=i]);
                        (i + 1, true)
                    }
                    // The LF would have to come after a cap: refuse now, unread.
                    None if window.len() == room => {
                        return Err(if budget_room < line_room as u64 {
                            ReadError::CommandTooLarge {
                                limit: self.limits.command,
                            }
                        } else {
                            ReadError::LineTooLong {
                                limit: self.limits.line,
                            }
                        });
                    }
                    None => {
                        out.extend_from_slice(window);
                        (window.len(), false)
                    }
                }
            };
            r.consume(taken);
            self.used += taken as u64;
            len += taken;
            if complete {
                return Ok(());
            }
        }
    }

    /// Reads a literal of `size` ≤ `limits.message` bytes into memory, as it arrives.
    async fn keep<R>(&mut self, r: &mut R, size: u64) -> Result<Vec<u8>, ReadError>
    where
        R: AsyncBufRead + Unpin + ?Sized,
    {
        let size = usize::try_from(size).map_err(|_| ReadError::MessageTooLarge {
            size,
            limit: self.limits.message,
        })?;
        // Reserved from the header (at most the cap): the pages are touched only as bytes
        // arrive, and the buffer never regrows (a regrowth would briefly hold two copies).
        let mut out = Vec::with_capacity(size);
        while out.len() < size {
            let taken = {
                let buf = fill(r, self.limits.idle).await?;
                if buf.is_empty() {
                    return Err(ReadError::Closed);
                }
                let take = buf.len().min(size - out.len());
                out.extend_from_slice(&buf[..take]);
                take
            };
            r.consume(taken);
        }
        Ok(out)
    }

    /// Reads and drops a literal of `size` bytes, which the caller has checked fits the
    /// command's budget.
    async fn discard<R>(&mut self, r: &mut R, size: u64) -> Result<(), ReadError>
    where
        R: AsyncBufRead + Unpin + ?Sized,
    {
        let mut left = size;
        while left > 0 {
            let taken = {
                let buf = fill(r, self.limits.idle).await?;
                if buf.is_empty() {
                    return Err(ReadError::Closed);
                }
                usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()))
            };
            r.consume(taken);
            left -= taken as u64;
            self.used += taken as u64;
        }
        Ok(())
    }
}

async fn fill<R>(r: &mut R, idle: Duration) -> Result<&[u8], ReadError>
where
    R: AsyncBufRead + Unpin + ?Sized,
{
    match tokio::time::timeout(idle, r.fill_buf()).await {
        Err(_) => Err(ReadError::Timeout(idle)),
        Ok(result) => Ok(result?),
    }
}

/// `{n}` or `{n+}` (RFC 7888 non-synchronizing) ending a line: the position of `{` and `n`.
/// A size too large for `u64` is `u64::MAX`, which every cap refuses.
fn literal_at_end(line: &[u8]) -> Option<(usize, u64)> {
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let digits = &inner[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let size = digits.iter().fold(0u64, |n, &d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    });
    Some((open, size))
}

/// Whether the text before a literal names the whole message, `BODY[]` (RFC 3501 §7.4.2).
fn ends_with_body_item(text: &[u8]) -> bool {
    let t = text.trim_ascii_end();
    t.len() >= 6 && t[t.len() - 6..].eq_ignore_ascii_case(b"BODY[]")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    const SMALL: Limits = Limits {
        line: 64,
        message: 300,
        command: 1000,
        idle: Duration::from_secs(5),
    };

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    /// Reads responses from `input` as one command until an error; checks every bound on the
    /// way and returns the responses and the final error.
    fn read_all(
        limits: Limits,
        input: &[u8],
        want_body: bool,
    ) -> (Vec<Response>, Option<ReadError>) {
        runtime().block_on(async {
            let mut reader = Reader::new(limits);
            reader.start_command();
            let mut rest = input;
            let mut out = Vec::new();
            let mut kept = 0u64;
            loop {
                let before = rest.len();
                let result = reader.read(&mut rest, want_body).await;
                assert!(rest.len() <= before, "the reader never un-reads");
                let consumed = (input.len() - rest.len()) as u64;
                match result {
                    Ok(response) => {
                        assert!(rest.len() < before, "a response consumes at least its LF");
                        assert!(response.text.len() as u64 <= limits.command);
                        assert!(!response.text.contains(&b'\n'));
                        if let Some(body) = &response.body {
                            assert!(body.len() as u64 <= limits.message);
                            kept += body.len() as u64;
                        }
                        assert!(consumed - kept <= limits.command, "{consumed} - {kept}");
                        out.push(response);
                    }
                    Err(e) => {
                        assert!(consumed - kept <= limits.command, "{consumed} - {kept}");
                        return (out, Some(e));
                    }
                }
            }
        })
    }

    #[test]
    fn literals_are_read_exactly_and_only_the_body_is_kept() {
        let input = b"* 1 FETCH (FLAGS {3}\r\nabc BODY[] {5}\r\nhello UID 7)\r\nm1 OK done\r\n";
        let (responses, err) = read_all(SMALL, input, true);
        assert!(matches!(err, Some(ReadError::Closed)));
        assert_eq!(responses.len(), 2);
        assert_eq!(responses[0].text, b"* 1 FETCH (FLAGS {} BODY[] {} UID 7)");
        assert_eq!(responses[0].body.as_deref(), Some(&b"hello"[..]));
        assert_eq!(responses[1].text, b"m1 OK done");
        let (responses, _) = read_all(SMALL, input, false);
        assert_eq!(responses[0].body, None);
    }

    #[test]
    fn a_line_one_byte_over_the_cap_is_refused_unread() {
        let mut line = vec![b'x'; 62];
        line.extend_from_slice(b"\r\n");
        let (responses, err) = read_all(SMALL, &line, false);
        assert_eq!(responses.len(), 1, "64 bytes with CRLF is exactly the cap");
        assert!(matches!(err, Some(ReadError::Closed)));
        line.insert(0, b'x');
        let (responses, err) = read_all(SMALL, &line, false);
        assert!(responses.is_empty());
        assert!(matches!(err, Some(ReadError::LineTooLong { limit: 64 })));
    }

    #[test]
    fn an_untagged_flood_ends_at_the_command_cap() {
        let flood = b"* OK still here\r\n".repeat(1000);
        let (responses, err) = read_all(SMALL, &flood, false);
        assert!(matches!(
            err,
            Some(ReadError::CommandTooLarge { limit: 1000 })
        ));
        assert_eq!(responses.len(), 1000 / 17);
        // A new command starts a new budget.
        runtime().block_on(async {
            let mut reader = Reader::new(SMALL);
            let mut rest = &flood[..];
            for _ in 0..3 {
                reader.start_command();
                for _ in 0..50 {
                    reader.read(&mut rest, false).await.unwrap();
                }
            }
        });
    }

    #[test]
    fn an_oversized_body_is_refused_from_its_header_and_other_literals_from_the_budget() {
        let giant = b"* 1 FETCH (UID 1 BODY[] {5000000000}\r\nxxxx";
        let (_, err) = read_all(LIMITS, giant, true);
        assert!(matches!(
            err,
            Some(ReadError::MessageTooLarge {
                size: 5_000_000_000,
                ..
            })
        ));
        let (_, err) = read_all(SMALL, b"* 1 FETCH (BODY[] {301}\r\n", true);
        assert!(matches!(
            err,
            Some(ReadError::MessageTooLarge { size: 301, .. })
        ));
        // Not asked for: the same literal is only data, and over the command's budget.
        let (_, err) = read_all(LIMITS, giant, false);
        assert!(matches!(err, Some(ReadError::CommandTooLarge { .. })));
        let (_, err) = read_all(SMALL, b"* X {99999999999999999999999}\r\n", false);
        assert!(matches!(err, Some(ReadError::CommandTooLarge { .. })));
    }

    #[test]
    fn literal_headers_are_recognised_only_at_the_end_of_a_line() {
        assert_eq!(literal_at_end(b"* 1 FETCH (BODY[] {12}"), Some((18, 12)));
        assert_eq!(literal_at_end(b"a {12+}"), Some((2, 12)));
        assert_eq!(literal_at_end(b"a {}"), None);
        assert_eq!(literal_at_end(b"a {1x}"), None);
        assert_eq!(literal_at_end(b"a {12} b"), None);
        assert!(ends_with_body_item(b"* 1 FETCH (UID 3 body[] "));
        assert!(!ends_with_body_item(b"* 1 FETCH (BODY[HEADER] "));
    }

    /// Pieces that reach the reader's interesting paths far more often than uniform bytes do.
    fn piece() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..80),
            Just(b"\r\n".to_vec()),
            Just(b"* OK hello\r\n".to_vec()),
            Just(b"* 1 FETCH (UID 1 BODY[] ".to_vec()),
            Just(b"m1 OK done\r\n".to_vec()),
            (0u64..400).prop_map(|n| format!("{{{n}}}\r\n").into_bytes()),
            any::<u64>().prop_map(|n| format!("{{{n}+}}\r\n").into_bytes()),
            (0usize..200).prop_map(|n| vec![b'a'; n]),
        ]
    }

    proptest! {
        // A fixed number of cases keeps CI time flat (well under a second here).
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_never_panic_or_exceed_the_caps(
            bytes in proptest::collection::vec(any::<u8>(), 0..4096),
            want_body in any::<bool>(),
        ) {
            read_all(SMALL, &bytes, want_body);
            read_all(LIMITS, &bytes, want_body);
        }

        #[test]
        fn imap_shaped_streams_never_panic_or_exceed_the_caps(
            pieces in proptest::collection::vec(piece(), 0..64),
            want_body in any::<bool>(),
        ) {
            let bytes = pieces.concat();
            read_all(SMALL, &bytes, want_body);
            read_all(LIMITS, &bytes, want_body);
        }
    }
}
