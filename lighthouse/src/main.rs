//! The Flatnet Lighthouse (registry, hole-punching broker, relay).
//!
//! Not built yet: single-host Flatnet needs no Lighthouse. This binary says
//! so instead of pretending to run.

fn main() {
    eprintln!("lighthouse: not implemented yet; see docs/architecture.md (issue: The Lighthouse)");
    std::process::exit(2);
}
