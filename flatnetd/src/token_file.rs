//! A join token must not stay in a config file other users can read. Once
//! flatnetd has joined with `[lighthouse] token`, it comments the token out
//! of the file (same permissions, atomic replace) and says so in its log.

use std::{os::unix::fs::PermissionsExt, path::Path};

/// `text` with every `token = …` line of the `[lighthouse]` table replaced
/// by a comment (`note` says why); `None` when there is none.
pub fn without_token(text: &str, note: &str) -> Option<String> {
    let mut table = String::new();
    let mut changed = false;
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        if t.starts_with('[') {
            table = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
        }
        let is_token =
            table == "lighthouse" && t.split_once('=').is_some_and(|(k, _)| k.trim() == "token");
        if is_token {
            let eol = if line.ends_with('\n') { "\n" } else { "" };
            out.push_str(&format!("# token = \"…\"  # {note}{eol}"));
            changed = true;
        } else {
            out.push_str(line);
        }
    }
    changed.then_some(out)
}

/// Comment the token out of the file at `path`. `Ok(false)`: there was none.
pub fn forget(path: &Path, note: &str) -> std::io::Result<bool> {
    let text = std::fs::read_to_string(path)?;
    let Some(new) = without_token(&text, note) else {
        return Ok(false);
    };
    let mode = std::fs::metadata(path)?.permissions().mode();
    flatnet_wire::fs::write_atomic(path, new.as_bytes(), mode & 0o7777)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_lighthouse_token_is_commented_out() {
        let text = "node_name = \"h1\"\ntoken = \"not this one\"\n\n[lighthouse]\n  token = \"flatnet1_secret\"\n\n[dns]\ntoken = \"nor this\"\n";
        let out = without_token(text, "used to join").unwrap();
        assert!(!out.contains("flatnet1_secret"));
        assert!(out.contains("# token = \"…\"  # used to join\n"));
        assert!(out.contains("token = \"not this one\"") && out.contains("token = \"nor this\""));
        assert_eq!(without_token(&out, "x"), None);
        assert_eq!(without_token("[lighthouse]\n# token = \"x\"\n", "x"), None);
    }

    #[test]
    fn the_file_keeps_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("flatnetd.toml");
        std::fs::write(&p, "[lighthouse]\ntoken = \"flatnet1_x\"\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(forget(&p, "used").unwrap());
        assert!(!std::fs::read_to_string(&p).unwrap().contains("flatnet1_x"));
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert!(!forget(&p, "used").unwrap());
    }
}
