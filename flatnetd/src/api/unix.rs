//! The local API server on a unix socket.
//!
//! One connection carries one or more request lines; each gets one response
//! line. Lines are bounded by [`flatnet_wire::framing::MAX_LINE`]; a
//! malformed line gets an `invalid_request` error and the connection stays
//! usable. Handlers run on the blocking pool because lease commits fsync.

use std::{os::unix::fs::PermissionsExt, path::Path};

use flatnet_wire::{framing, ApiError, ErrorKind, Request, Response};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
};
use tracing::{debug, warn};

use crate::service::SharedService;

/// Bind the socket: create its directory, replace a stale socket file.
/// The process umask (0077) makes it 0600 from the start; with a group
/// configured it then opens to that group (0660), never wider.
pub fn bind(path: &Path, group: Option<&str>) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    if let Some(g) = group {
        let gid = nix::unistd::Group::from_name(g)
            .map_err(std::io::Error::other)?
            .ok_or_else(|| std::io::Error::other(format!("unknown group {g:?}")))?
            .gid;
        nix::unistd::chown(path, None, Some(gid)).map_err(std::io::Error::other)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    }
    Ok(listener)
}

/// Accept connections forever.
pub async fn serve(listener: UnixListener, service: SharedService) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let svc = service.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, svc).await {
                        debug!("api connection: {e}");
                    }
                });
            }
            Err(e) => {
                warn!("accept on api socket: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(stream: UnixStream, service: SharedService) -> std::io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut rd)
            .take(framing::MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Ok(());
        }
        let too_long = line.len() > framing::MAX_LINE;
        let response = match framing::decode::<Request>(&line) {
            Ok(req) => {
                let svc = service.clone();
                tokio::task::spawn_blocking(move || svc.handle(req))
                    .await
                    .unwrap_or_else(|e| {
                        Response::Error(ApiError::new(ErrorKind::Internal, e.to_string()))
                    })
            }
            Err(e) => Response::Error(ApiError::new(ErrorKind::InvalidRequest, e.to_string())),
        };
        let bytes = framing::encode(&response).map_err(std::io::Error::other)?;
        wr.write_all(&bytes).await?;
        if too_long {
            // The rest of the oversized line is unread; drop the connection.
            return Ok(());
        }
    }
}
