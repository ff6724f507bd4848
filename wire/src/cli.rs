//! How every Flatnet binary reports an error and ends (`flatnetd`,
//! `flatnetctl`, `lighthouse`; the `flatnet` plugin answers in its
//! protocols' own formats instead).
//!
//! One rule: an error is printed once, as `prog: what happened: why`, each
//! cause once and on one line, with what to do next where the message has
//! it; exit code 1 for a failed command, 2 for a command line that does not
//! parse. When `--json` was given the same error is one JSON object on
//! stderr (same exit code), so scripts never parse prose:
//!
//! ```json
//! {"program":"flatnetctl","error":"cannot reach flatnetd: ...","causes":["cannot reach flatnetd", "..."],"exit_code":1}
//! ```
//!
//! Why causes are folded here rather than only in each error type: an
//! error type that writes its source into its own message (`"reading
//! {path}: {source}"`) and also returns it from `source()` is common (and
//! correct for `{}` alone), but a chain printer then says the cause twice.
//! A cause whose text the message before it already contains is dropped.

use std::error::Error;

/// Exit code of a command that failed.
pub const FAILED: u8 = 1;
/// Exit code of a command line that does not parse.
pub const USAGE: u8 = 2;

/// The distinct messages of `e` and its sources, each trimmed and without
/// Rust's " (os error N)" suffixes, outermost first; a cause already said
/// by an earlier message is left out.
pub fn causes(e: &(dyn Error + 'static)) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let msg = crate::plain_error(err).trim().to_string();
        if !msg.is_empty() && !out.iter().any(|m| m.contains(&msg)) {
            out.push(msg);
        }
        cur = err.source();
    }
    out
}

/// The one line printed for `e`: `prog: cause: cause…`.
pub fn line(prog: &str, e: &(dyn Error + 'static)) -> String {
    format!("{prog}: {}", causes(e).join(": "))
}

/// The JSON object printed for `e` under `--json`.
pub fn json(prog: &str, causes: &[String], code: u8) -> String {
    serde_json::json!({
        "program": prog,
        "error": causes.join(": "),
        "causes": causes,
        "exit_code": code,
    })
    .to_string()
}

/// Whether the command line asks for JSON (`--json` before any `--`), read
/// from the raw arguments so that errors before or during parsing honour it.
pub fn wants_json<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(args: I) -> bool {
    args.into_iter()
        .skip(1)
        .map(|a| a.as_ref().to_os_string())
        .take_while(|a| a != "--")
        .any(|a| a == "--json")
}

/// Print an error (as a line, or as JSON when the command line asked for
/// it) and return its exit code.
pub fn report(prog: &str, causes: &[String], code: u8) -> std::process::ExitCode {
    if wants_json(std::env::args_os()) {
        eprintln!("{}", json(prog, causes, code));
    } else {
        eprintln!("{prog}: {}", causes.join(": "));
    }
    std::process::ExitCode::from(code)
}

/// How a binary's `main` ends: success, or the error reported by
/// [`report`] with exit code 1.
pub fn exit<E>(prog: &str, r: Result<(), E>) -> std::process::ExitCode
where
    E: AsRef<dyn Error + Send + Sync + 'static>,
{
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let e: &(dyn Error + 'static) = e.as_ref();
            report(prog, &causes(e), FAILED)
        }
    }
}

/// Parse the command line with clap. `--help` and `--version` print and
/// exit as clap does; any other parse error is reported in this module's
/// format with exit code 2, and `Err` carries that code for `main` to return.
#[cfg(feature = "cli")]
pub fn parse<P: clap::Parser>(prog: &str) -> Result<P, std::process::ExitCode> {
    match P::try_parse() {
        Ok(p) => Ok(p),
        Err(e)
            if !e.use_stderr()
                || e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand =>
        {
            e.exit()
        }
        Err(e) => Err(report(prog, &usage_causes(&e.render().to_string()), USAGE)),
    }
}

/// A command-line parser's message (clap's rendered error) as one cause
/// line: its first paragraph without the `error: ` prefix, its tips, and
/// where to read the usage. `usage` is the `Usage:` line's command path,
/// e.g. `flatnetctl ping`.
pub fn usage_causes(rendered: &str) -> Vec<String> {
    let mut paras = rendered
        .split("\n\n")
        .map(str::trim)
        .filter(|p| !p.is_empty());
    let first = paras
        .next()
        .unwrap_or("invalid command line")
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ");
    let first = first.strip_prefix("error: ").unwrap_or(&first).to_string();
    let mut out = vec![first];
    let mut usage = None;
    for p in paras {
        if let Some(tip) = p.strip_prefix("tip: ") {
            out.push(tip.lines().map(str::trim).collect::<Vec<_>>().join(" "));
        } else if let Some(u) = p.strip_prefix("Usage: ") {
            let path: Vec<&str> = u
                .split_whitespace()
                .take_while(|w| !w.starts_with(['[', '<', '-']))
                .collect();
            usage = Some(path.join(" "));
        }
    }
    if let Some(u) = usage.filter(|u| !u.is_empty()) {
        let last = out.len() - 1;
        out[last] = format!("{}; see `{u} --help`", out[last]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading {path}: {source}")]
    struct Read {
        path: String,
        source: std::io::Error,
    }

    #[test]
    fn a_cause_the_message_already_says_is_printed_once() {
        let e = Read {
            path: "/x.toml".into(),
            source: std::io::Error::from_raw_os_error(2),
        };
        assert_eq!(
            line("flatnetd", &e),
            "flatnetd: reading /x.toml: No such file or directory"
        );
        let a = anyhow::Error::from(e).context("loading the configuration");
        let e: &(dyn Error + 'static) = a.as_ref();
        assert_eq!(
            line("flatnetd", e),
            "flatnetd: loading the configuration: reading /x.toml: No such file or directory"
        );
    }

    #[test]
    fn distinct_causes_are_all_kept_in_order() {
        let a =
            anyhow::Error::from(std::io::Error::from_raw_os_error(28)).context("storing the lease");
        let e: &(dyn Error + 'static) = a.as_ref();
        assert_eq!(causes(e), ["storing the lease", "No space left on device"]);
        let j: serde_json::Value = serde_json::from_str(&json("x", &causes(e), 1)).unwrap();
        assert_eq!(j["error"], "storing the lease: No space left on device");
        assert_eq!(j["causes"][1], "No space left on device");
        assert_eq!(j["exit_code"], 1);
    }

    #[test]
    fn json_is_asked_for_only_before_a_double_dash() {
        assert!(wants_json(["p", "status", "--json"]));
        assert!(!wants_json(["p", "status"]));
        assert!(!wants_json(["p", "--", "--json"]));
        // The program's own name is never an argument.
        assert!(!wants_json(["--json"]));
    }

    #[test]
    fn a_usage_error_becomes_one_line_with_where_to_look() {
        let clap = "error: unexpected argument '--bogus' found\n\n  tip: to pass '--bogus' as a value, use '-- --bogus'\n\nUsage: flatnetctl ping [OPTIONS] [TARGET]\n\nFor more information, try '--help'.\n";
        assert_eq!(
            usage_causes(clap),
            [
                "unexpected argument '--bogus' found",
                "to pass '--bogus' as a value, use '-- --bogus'; see `flatnetctl ping --help`"
            ]
        );
        let missing = "error: the following required arguments were not provided:\n  <TOKEN>\n\nUsage: flatnetd join <TOKEN>\n";
        assert_eq!(
            usage_causes(missing),
            ["the following required arguments were not provided: <TOKEN>; see `flatnetd join --help`"]
        );
    }
}
