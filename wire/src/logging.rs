//! The daemons' logs: human lines or JSON objects (flatnetd's `log_format`,
//! the Lighthouse's `--log-format`) on stderr, which systemd hands to the
//! journal, through a filter (`log_level`, or `FLATNET_LOG` when set) that
//! can change without a restart (flatnetd: SIGHUP; the Lighthouse: its
//! admin socket).

use tracing_subscriber::{
    layer::SubscriberExt, reload, util::SubscriberInitExt, EnvFilter, Registry,
};

/// How log lines are written.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per event, for log collectors.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("log format {s:?}: use \"text\" or \"json\"")),
        }
    }
}

/// The environment variable that overrides `log_level`.
pub const ENV: &str = "FLATNET_LOG";

/// Changes the running log filter.
pub struct LogHandle {
    filter: reload::Handle<EnvFilter, Registry>,
    /// `FLATNET_LOG` was set: it wins over the config file, on reload too.
    from_env: bool,
}

/// Parse a filter, with an error a user can act on.
pub fn parse_filter(level: &str) -> Result<EnvFilter, String> {
    EnvFilter::try_new(level).map_err(|e| {
        format!("log_level {level:?} is not a log filter ({e}); use e.g. \"info\" or \"debug\"")
    })
}

/// Install the global subscriber. Call once, before anything logs.
pub fn init(format: LogFormat, level: &str) -> Result<LogHandle, String> {
    let env = std::env::var(ENV).ok().filter(|v| !v.trim().is_empty());
    let filter = match &env {
        Some(v) => parse_filter(v).map_err(|e| format!("{ENV}: {e}"))?,
        None => parse_filter(level)?,
    };
    let (filter, handle) = reload::Layer::new(filter);
    let stderr_tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let text = (format == LogFormat::Text).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(stderr_tty)
    });
    let json = (format == LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(std::io::stderr)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .try_init()
        .map_err(|e| format!("setting up logging: {e}"))?;
    Ok(LogHandle {
        filter: handle,
        from_env: env.is_some(),
    })
}

impl LogHandle {
    /// Apply the `log_level` of a reloaded config. Returns whether the
    /// filter changed (`false` while `FLATNET_LOG` rules).
    pub fn set_level(&self, level: &str) -> Result<bool, String> {
        if self.from_env {
            return Ok(false);
        }
        self.force_level(level)
    }

    /// Set the filter whatever `FLATNET_LOG` said (an explicit request).
    pub fn force_level(&self, level: &str) -> Result<bool, String> {
        let new = parse_filter(level)?;
        let old = self
            .filter
            .with_current(|f| f.to_string())
            .map_err(|e| e.to_string())?;
        if old == new.to_string() {
            return Ok(false);
        }
        self.filter.reload(new).map_err(|e| e.to_string())?;
        Ok(true)
    }
}

impl LogHandle {
    /// The filter in force now.
    pub fn current(&self) -> String {
        self.filter
            .with_current(|f| f.to_string())
            .unwrap_or_default()
    }
}
