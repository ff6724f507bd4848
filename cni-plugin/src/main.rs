//! `flatnet`: the Flatnet CNI plugin and netavark plugin.
//!
//! As a CNI plugin it is driven by `CNI_COMMAND` and a JSON configuration on
//! stdin; every failure is printed as the spec's error JSON on stdout with a
//! non-zero exit status. Called with a first argument `create`, `setup`,
//! `teardown` or `info` it is a netavark plugin; its errors are
//! `{"error": "..."}`.

use std::io::{IsTerminal, Read, Write};

use flatnet_cni::{
    cni::{self, cmd, env::Env, error::code, CniError},
    netavark,
};

/// Largest configuration accepted on stdin.
const MAX_STDIN: u64 = 1 << 20;

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--version") {
        println!("flatnet {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if std::env::var_os("CNI_COMMAND").is_none() {
        if let Some(sub) = args.first().filter(|a| netavark::is_subcommand(a)) {
            netavark_main(sub, &args);
        }
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

/// Read all of stdin, at most [`MAX_STDIN`] bytes.
fn read_stdin(buf: &mut Vec<u8>) -> Result<(), CniError> {
    std::io::stdin()
        .take(MAX_STDIN + 1)
        .read_to_end(buf)
        .map_err(|e| CniError::new(code::IO_FAILURE, "failed to read stdin", e.to_string()))?;
    if buf.len() as u64 > MAX_STDIN {
        return Err(CniError::new(
            code::IO_FAILURE,
            "configuration too large",
            format!("stdin exceeds {MAX_STDIN} bytes"),
        ));
    }
    Ok(())
}

/// The netavark plugin entry point; never returns.
fn netavark_main(sub: &str, args: &[String]) -> ! {
    let mut stdin = Vec::new();
    let outcome = if sub == "info" {
        Ok(())
    } else {
        read_stdin(&mut stdin).map_err(netavark::PluginError::from)
    }
    .and_then(|()| netavark::run(args, &stdin));
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(Some(v)) => {
            let _ = writeln!(out, "{v}");
            std::process::exit(0)
        }
        Ok(None) => std::process::exit(0),
        Err(e) => {
            let _ = writeln!(out, "{}", serde_json::json!({ "error": e.0 }));
            let _ = out.flush();
            std::process::exit(1)
        }
    }
}
