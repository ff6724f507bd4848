//! systemd notifications for `Type=notify` units (the `sd-notify` crate):
//! `READY=1` once a daemon serves, `RELOADING=1`/`READY=1` around a
//! reload, `STOPPING=1`, and `WATCHDOG=1` keepalives while the daemon's
//! own health check passes. Outside systemd (no `NOTIFY_SOCKET`) every
//! call does nothing.

use std::{sync::Arc, time::Duration};

use sd_notify::NotifyState;

/// Tell systemd the daemon is up, with a one-line status for
/// `systemctl status`.
pub fn ready(status: &str) {
    let _ = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload starts (`systemctl reload`); call [`ready`] when it is done.
pub fn reloading() {
    let mono = sd_notify::NotifyState::monotonic_usec_now();
    match mono {
        Ok(m) => {
            let _ = sd_notify::notify(&[NotifyState::Reloading, m]);
        }
        Err(_) => {
            let _ = sd_notify::notify(&[NotifyState::Reloading]);
        }
    }
}

/// The daemon is shutting down.
pub fn stopping() {
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
}

/// The daemon's own liveness check: `Err` says what is stuck.
pub type Health = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The keepalive period for a watchdog of `timeout`: half of it, as
/// sd_watchdog_enabled(3) advises.
pub fn keepalive_every(timeout: Duration) -> Duration {
    (timeout / 2).max(Duration::from_millis(100))
}

/// Send `WATCHDOG=1` every half watchdog period while `health` passes
/// (each check runs on the blocking pool and must finish within that
/// period). A failing or hanging check stops the keepalives, so systemd
/// restarts the daemon (`WatchdogSec`, `Restart=on-failure`). Returns at
/// once when systemd set no watchdog.
pub async fn watchdog(health: Health) {
    let Some(timeout) = sd_notify::watchdog_enabled() else {
        return;
    };
    keepalives(keepalive_every(timeout), health, || {
        let _ = sd_notify::notify(&[NotifyState::Watchdog]);
    })
    .await
}

/// The watchdog loop with the notification passed in (tests count it).
pub async fn keepalives(every: Duration, health: Health, ping: impl Fn()) {
    let mut complained = false;
    loop {
        let h = health.clone();
        let check = tokio::time::timeout(every, tokio::task::spawn_blocking(move || h())).await;
        let verdict = match check {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err("the health check panicked".into()),
            Err(_) => Err(format!(
                "the health check did not finish within {} ms",
                every.as_millis()
            )),
        };
        match verdict {
            Ok(()) => {
                if complained {
                    tracing::info!("watchdog: the health check passes again");
                }
                complained = false;
                ping();
            }
            Err(e) if !complained => {
                complained = true;
                tracing::error!(
                    "watchdog: {e}; no keepalive sent, systemd restarts the daemon \
                     when WatchdogSec runs out"
                );
            }
            Err(_) => {}
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn keepalives_stop_while_the_check_fails_or_hangs() {
        let pings = Arc::new(AtomicU32::new(0));
        let state = Arc::new(AtomicU32::new(0)); // 0 ok, 1 failing, 2 hanging
        let st = state.clone();
        let health: Health = Arc::new(move || match st.load(Ordering::SeqCst) {
            0 => Ok(()),
            1 => Err("lease store locked".into()),
            _ => {
                std::thread::sleep(Duration::from_millis(400));
                Ok(())
            }
        });
        let p = pings.clone();
        let every = Duration::from_millis(50);
        let task = tokio::spawn(keepalives(every, health, move || {
            p.fetch_add(1, Ordering::SeqCst);
        }));
        let wait = || tokio::time::sleep(Duration::from_millis(300));
        wait().await;
        let healthy = pings.load(Ordering::SeqCst);
        assert!(healthy >= 3, "only {healthy} keepalives in 300 ms at 50 ms");
        for bad in [1, 2] {
            state.store(bad, Ordering::SeqCst);
            // Let a check already running finish first.
            wait().await;
            let before = pings.load(Ordering::SeqCst);
            wait().await;
            assert_eq!(
                pings.load(Ordering::SeqCst),
                before,
                "keepalive in state {bad}"
            );
        }
        state.store(0, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(
            pings.load(Ordering::SeqCst) > healthy,
            "keepalives did not resume"
        );
        task.abort();
    }

    #[test]
    fn keepalives_come_twice_per_period() {
        assert_eq!(
            keepalive_every(Duration::from_secs(20)),
            Duration::from_secs(10)
        );
        assert_eq!(
            keepalive_every(Duration::from_millis(10)),
            Duration::from_millis(100)
        );
    }
}
