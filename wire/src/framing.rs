//! Line framing for the local API: one JSON document per `\n`-terminated
//! line, with a hard size limit so a hostile peer cannot make us buffer
//! without bound.

use serde::{de::DeserializeOwned, Serialize};

/// Largest accepted line, in bytes (requests are well under 4 KiB; a status
/// reply with thousands of leases fits easily).
pub const MAX_LINE: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("message exceeds {MAX_LINE} bytes")]
    TooLong,
    #[error("connection closed before a complete message")]
    Truncated,
    #[error("malformed message: {0}")]
    Json(#[from] serde_json::Error),
}

/// Encode one message as a JSON line.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let mut v = serde_json::to_vec(msg)?;
    v.push(b'\n');
    Ok(v)
}

/// Decode one line (with or without the trailing newline).
pub fn decode<T: DeserializeOwned>(line: &[u8]) -> Result<T, FrameError> {
    if line.len() > MAX_LINE {
        return Err(FrameError::TooLong);
    }
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    Ok(serde_json::from_slice(line)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Request;

    #[test]
    fn round_trip() {
        let bytes = encode(&Request::Ping).unwrap();
        assert_eq!(bytes.last(), Some(&b'\n'));
        assert_eq!(decode::<Request>(&bytes).unwrap(), Request::Ping);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(matches!(
            decode::<Request>(b"{not json\n"),
            Err(FrameError::Json(_))
        ));
    }
}
