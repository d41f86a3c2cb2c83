//! Reads that stop at a cap. A file larger than its kind can be, one that grows while it is
//! read, or a device such as `/dev/zero` is refused after `cap + 1` bytes, never read to its
//! end. This module only reads: each caller says in its own error what the cap means.
//!
//! What it refuses it overwrites before freeing: a caller may be reading a secret (a key, a
//! password file), and a refusal must not leave a copy of one behind. A caller reading a
//! secret passes the file's length as the size hint ([`read_file`] does): a buffer that has to
//! grow frees a partial copy each time.

use std::io::Read;
use std::path::Path;

/// [`read_to_end`] of the file at `path`, sized by the file's length: the way to read a file a
/// user names (a device or a pipe has no length, and is still stopped at the cap).
///
/// # Errors
/// Opening or reading the file.
pub fn read_file(path: &Path, cap: u64) -> std::io::Result<Option<Vec<u8>>> {
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    read_to_end(file, cap, len)
}

/// Reads `reader` to its end if that is at most `cap` bytes; `Ok(None)` when there is more.
/// `size_hint` (a file's length, 0 when unknown) sizes the buffer up front, at most to the cap;
/// the byte that tells "more" is read apart, so it never makes the buffer grow.
///
/// # Errors
/// The reader's own.
pub fn read_to_end(
    mut reader: impl Read,
    cap: u64,
    size_hint: u64,
) -> std::io::Result<Option<Vec<u8>>> {
    use zeroize::Zeroize as _;
    let mut bytes = Vec::with_capacity(usize::try_from(size_hint.min(cap)).unwrap_or(0));
    if let Err(e) = (&mut reader).take(cap).read_to_end(&mut bytes) {
        bytes.zeroize();
        return Err(e);
    }
    let mut probe = [0u8; 1];
    let more = loop {
        match reader.read(&mut probe) {
            Ok(0) => return Ok(Some(bytes)),
            Ok(_) => break Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    bytes.zeroize();
    probe.zeroize();
    more
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn up_to_the_cap_is_read_whole_and_one_byte_more_is_refused() {
        let data = vec![7u8; 100];
        let whole = read_to_end(&data[..], 100, 100).unwrap().unwrap();
        assert_eq!(whole, data);
        // Sized once from the hint: reading to the end and looking past it did not grow it.
        assert_eq!(whole.capacity(), 100);
        assert_eq!(read_to_end(&data[..], 100, 0).unwrap(), Some(data.clone()));
        assert_eq!(read_to_end(&data[..], 99, 100).unwrap(), None);
        assert_eq!(read_to_end(&data[..0], 0, 0).unwrap(), Some(Vec::new()));
    }

    #[test]
    fn an_endless_reader_stops_one_byte_past_the_cap() {
        let mut endless = std::io::repeat(1);
        assert_eq!(read_to_end(&mut endless, 1 << 20, 0).unwrap(), None);
        // The hint of a lying length does not allocate past the cap.
        assert_eq!(read_to_end(std::io::repeat(0), 16, u64::MAX).unwrap(), None);
    }

    #[test]
    fn a_named_file_is_read_into_a_buffer_of_its_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![3u8; 5000]).unwrap();
        let whole = read_file(&path, 5000).unwrap().unwrap();
        assert_eq!((whole.len(), whole.capacity()), (5000, 5000));
        assert_eq!(read_file(&path, 4999).unwrap(), None);
        assert!(read_file(&dir.path().join("missing"), 10).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn a_device_is_refused_at_the_cap() {
        let zero = std::fs::File::open("/dev/zero").unwrap();
        assert_eq!(read_to_end(zero, 4096, 0).unwrap(), None);
        assert_eq!(read_file(Path::new("/dev/zero"), 4096).unwrap(), None);
    }
}
