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
    #[error("{}", unreachable(path, cause))]
    Unreachable {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("talking to flatnetd: {}", crate::plain_error(.0))]
    Io(#[from] std::io::Error),
    #[error("bad reply from flatnetd: {0}")]
    Frame(#[from] FrameError),
    /// The daemon answered with an error.
    #[error("flatnetd: {}", .0.message)]
    Api(ApiError),
}

/// Why the socket cannot be used, as (summary, what happened and what to do).
pub fn unreachable_parts(path: &Path, cause: &std::io::Error) -> (&'static str, String) {
    use std::io::ErrorKind::*;
    let p = path.display();
    match cause.kind() {
        NotFound | ConnectionRefused => (
            "flatnetd is not running",
            format!("nothing listens on {p}; start it with `systemctl start flatnetd`"),
        ),
        PermissionDenied => (
            "no permission to use flatnetd's socket",
            format!(
                "{p}: run as root, or join the group named by socket_group in \
                 /etc/flatnet/flatnetd.toml"
            ),
        ),
        _ => (
            "flatnetd is not reachable",
            format!("{p}: {}", crate::plain_error(cause)),
        ),
    }
}

fn unreachable(path: &Path, cause: &std::io::Error) -> String {
    let (summary, detail) = unreachable_parts(path, cause);
    format!("{summary}: {detail}")
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
            UnixStream::connect(&self.path).map_err(|cause| ClientError::Unreachable {
                path: self.path.clone(),
                cause,
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
