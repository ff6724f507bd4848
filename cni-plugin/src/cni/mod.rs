//! The CNI protocol: configuration on stdin, environment, results and
//! errors, for spec versions 0.4.0, 1.0.0 and 1.1.0.

pub mod cmd;
pub mod conf;
pub mod env;
pub mod error;
pub mod result;
pub mod version;

pub use error::CniError;
