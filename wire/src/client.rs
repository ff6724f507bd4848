//! A small blocking client for flatnetd's local API, shared by the `flatnet`
//! plugin and `flatnetctl` (both are short-lived, synchronous processes).

use std::{
    io::{BufRead, BufReader, Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{
    api::{ApiError, Reply, Request, Response},
    framing::{self, FrameError},
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon is not running or not listening (a retryable condition).
    #[error("flatnetd is not reachable at {}: {}", path.display(), crate::plain_error(source))]
    Unreachable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("talking to flatnetd: {}", crate::plain_error(.0))]
    Io(#[from] std::io::Error),
    #[error("bad reply from flatnetd: {0}")]
    Frame(#[from] FrameError),
    /// The daemon answered with an error.
    #[error("flatnetd: {}", .0.message)]
    Api(ApiError),
}

pub struct Client {
    path: PathBuf,
    timeout: Duration,
}

impl Client {
    pub fn new(path: impl AsRef<Path>) -> Self {
        Self {
            path: path.as_ref().to_owned(),
            timeout: Duration::from_secs(30),
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Send one request and wait for its reply.
    pub fn call(&self, req: &Request) -> Result<Reply, ClientError> {
        let mut stream =
            UnixStream::connect(&self.path).map_err(|source| ClientError::Unreachable {
                path: self.path.clone(),
                source,
            })?;
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_write_timeout(Some(self.timeout))?;
        stream.write_all(&framing::encode(req)?)?;
        let mut line = Vec::new();
        BufReader::new(stream)
            .take(framing::MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if line.is_empty() {
            return Err(FrameError::Truncated.into());
        }
        let resp: Response = framing::decode(&line)?;
        Result::<Reply, ApiError>::from(resp).map_err(ClientError::Api)
    }
}
