//! `flatnet`: the Flatnet CNI plugin (and, later, netavark plugin).
//!
//! As a CNI plugin it is driven by `CNI_COMMAND` and a JSON configuration on
//! stdin; every failure is printed as the spec's error JSON on stdout with a
//! non-zero exit status.

mod attach;
mod cni;
mod netlink;

use std::io::{IsTerminal, Read, Write};

use cni::{cmd, env::Env, error::code, CniError};

/// Largest configuration accepted on stdin.
const MAX_STDIN: u64 = 1 << 20;

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--version") {
        println!("flatnet {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    if std::env::var_os("CNI_COMMAND").is_none() && std::io::stdin().is_terminal() {
        eprintln!(
            "flatnet {}: a CNI plugin; run by a container runtime with CNI_COMMAND set.\n\
             Supported CNI versions: {}",
            env!("CARGO_PKG_VERSION"),
            cni::version::SUPPORTED.join(", ")
        );
        std::process::exit(2);
    }
    let mut stdin = Vec::new();
    let read = std::io::stdin().take(MAX_STDIN + 1).read_to_end(&mut stdin);
    let outcome = match read {
        Err(e) => Err(CniError::new(
            code::IO_FAILURE,
            "failed to read stdin",
            e.to_string(),
        )),
        Ok(_) if stdin.len() as u64 > MAX_STDIN => Err(CniError::new(
            code::IO_FAILURE,
            "configuration too large",
            format!("stdin exceeds {MAX_STDIN} bytes"),
        )),
        Ok(_) => Env::read(|k| std::env::var(k).ok()).and_then(|env| cmd::run(&env, &stdin)),
    };
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(Some(v)) => {
            let _ = writeln!(out, "{v}");
        }
        Ok(None) => {}
        Err(e) => {
            let _ = writeln!(out, "{}", e.to_json(&cmd::error_version(&stdin)));
            let _ = out.flush();
            std::process::exit(1);
        }
    }
}
