//! CNI errors: every failure of the plugin ends up as one of these and is
//! printed as the spec's error JSON. Codes are mapped here, in one place.

use flatnet_wire::{client::ClientError, ErrorKind};
use serde::Serialize;

use crate::netlink::NlError;

/// Well-known CNI error codes (spec section "Error").
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    /// Plugin-specific: setting up or checking interfaces failed.
    pub const INTERFACE: u32 = 100;
    /// Plugin-specific: flatnetd refused or failed the request.
    pub const DAEMON: u32 = 101;
    /// Plugin-specific: no address left in this host's subnet.
    pub const EXHAUSTED: u32 = 102;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}: {details}")]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The error object for stdout.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        #[derive(Serialize)]
        struct Out<'a> {
            #[serde(rename = "cniVersion")]
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            details: &'a str,
        }
        serde_json::to_value(Out {
            cni_version,
            code: self.code,
            msg: &self.msg,
            details: &self.details,
        })
        .unwrap_or_default()
    }
}

impl From<ClientError> for CniError {
    fn from(e: ClientError) -> Self {
        match &e {
            ClientError::Unreachable { path, cause } => {
                let (summary, detail) = flatnet_wire::client::unreachable_parts(path, cause);
                CniError::new(code::TRY_AGAIN_LATER, summary, detail)
            }
            ClientError::Api(api) => match api.kind {
                ErrorKind::Exhausted => {
                    CniError::new(code::EXHAUSTED, "no free address", api.message.clone())
                }
                ErrorKind::Unavailable => CniError::new(
                    code::TRY_AGAIN_LATER,
                    "flatnetd is not ready",
                    api.message.clone(),
                ),
                ErrorKind::InvalidRequest => CniError::new(
                    code::INVALID_CONFIG,
                    "flatnetd rejected the request",
                    api.message.clone(),
                ),
                ErrorKind::Internal => {
                    CniError::new(code::DAEMON, "flatnetd failed", api.message.clone())
                }
            },
            ClientError::Io(_) | ClientError::Frame(_) => CniError::new(
                code::IO_FAILURE,
                "talking to flatnetd failed",
                e.to_string(),
            ),
        }
    }
}

impl From<NlError> for CniError {
    fn from(e: NlError) -> Self {
        CniError::new(code::INTERFACE, "interface setup failed", e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use flatnet_wire::ApiError;

    use super::*;

    #[test]
    fn json_shape() {
        let v = CniError::new(7, "Invalid Configuration", "bad").to_json("1.0.0");
        assert_eq!(
            v,
            serde_json::json!({"cniVersion":"1.0.0","code":7,"msg":"Invalid Configuration","details":"bad"})
        );
    }

    #[test]
    fn daemon_errors_map_to_codes() {
        let down: CniError = ClientError::Unreachable {
            path: "/x".into(),
            cause: std::io::Error::from(std::io::ErrorKind::NotFound),
        }
        .into();
        assert_eq!(down.code, code::TRY_AGAIN_LATER);
        assert!(
            down.details.contains("systemctl start flatnetd"),
            "{}",
            down.details
        );
        let full: CniError = ClientError::Api(ApiError::new(ErrorKind::Exhausted, "x")).into();
        assert_eq!(full.code, code::EXHAUSTED);
        let bad: CniError = ClientError::Api(ApiError::new(ErrorKind::InvalidRequest, "x")).into();
        assert_eq!(bad.code, code::INVALID_CONFIG);
    }
}
