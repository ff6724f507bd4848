//! Reaching the Lighthouse again: overlapping connect attempts.
//!
//! A QUIC connect to a Lighthouse that is down never fails fast: nothing
//! answers (no ICMP reaches quinn), so the attempt resends its Initial
//! after about 1, 3 and 7 s and gives up at the join timeout. One attempt
//! at a time, followed by a backoff, leaves gaps of up to the timeout plus
//! the backoff with no packet on the wire: a Lighthouse back from an outage
//! waited up to 9 s for a node to notice, and relayed peers with it.
//!
//! [`race`] starts a new attempt on the backoff's cadence while earlier ones
//! still wait, and keeps the first to succeed; the losers are dropped. Only
//! the QUIC handshake races (`client::connect` registers nothing), so the
//! Lighthouse never sees two sessions from one node. The union of the
//! attempts' resends puts a packet on the wire at least every 2–3 s, at a
//! cost of about one 1,200-byte Initial per second per node while the
//! Lighthouse is down.
//!
//! Generic over the attempt, with tokio's clock: unit-tested with paused
//! time and no sockets.

use std::{future::Future, time::Duration};

use futures::{stream::FuturesUnordered, StreamExt};

use super::Backoff;

/// At most this many attempts wait at once (the join timeout over the
/// shortest cadence is 10).
pub const MAX_PENDING: usize = 8;

/// Start `attempt()` now and again after each `cadence` delay (`jitter()`
/// in [0, 1) spreads them) until one succeeds; return its value. Each
/// failure goes to `on_error` as it happens; the race goes on.
pub async fn race<T, E, F, Fut>(
    mut attempt: F,
    mut cadence: Backoff,
    mut jitter: impl FnMut() -> f64,
    mut on_error: impl FnMut(E),
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut pending = FuturesUnordered::new();
    pending.push(attempt());
    let next = tokio::time::sleep(cadence.next(jitter()));
    tokio::pin!(next);
    loop {
        tokio::select! {
            Some(r) = pending.next() => match r {
                Ok(v) => return v,
                Err(e) => on_error(e),
            },
            () = &mut next => {
                if pending.len() < MAX_PENDING {
                    pending.push(attempt());
                }
                let d = cadence.next(jitter());
                next.as_mut().reset(tokio::time::Instant::now() + d);
            }
        }
    }
}

/// The delay before reconnecting after a session of length `lived` ends:
/// none after a session that held (a Lighthouse restart is found again at
/// once), the growing `backoff` after one that ended soon after it began
/// (a Lighthouse that accepts and drops us is not hammered).
pub fn after_session(lived: Duration, backoff: &mut Backoff, jitter: f64) -> Duration {
    if lived >= STABLE {
        backoff.reset();
        Duration::ZERO
    } else {
        backoff.next(jitter)
    }
}

/// A session that lasted this long was a good one.
pub const STABLE: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        cell::{Cell, RefCell},
        rc::Rc,
    };
    use tokio::time::Instant;

    /// When an attempt started at `start` (seconds after `t0`) joins a
    /// Lighthouse that is up from `up`: at its first Initial sent after
    /// `up` (sends at +0, +1, +3, +7 s, like quinn's doubling resends),
    /// or never (fails at the 10 s timeout).
    fn joins_at(start: f64, up: f64) -> Option<f64> {
        [0.0, 1.0, 3.0, 7.0]
            .iter()
            .map(|o| start + o)
            .find(|t| *t >= up)
    }

    /// Race against a Lighthouse that comes back at `up` seconds; returns
    /// when the node is connected, and the most attempts waiting at once.
    async fn reconnect_time(up: f64, jitter: f64) -> (f64, usize) {
        let t0 = Instant::now();
        let waiting = Rc::new(Cell::new(0usize));
        let most = Rc::new(Cell::new(0usize));
        let attempt = || {
            let (waiting, most) = (waiting.clone(), most.clone());
            async move {
                waiting.set(waiting.get() + 1);
                most.set(most.get().max(waiting.get()));
                let start = t0.elapsed().as_secs_f64();
                let r = match joins_at(start, up) {
                    Some(t) => {
                        tokio::time::sleep_until(t0 + Duration::from_secs_f64(t)).await;
                        Ok(t)
                    }
                    None => {
                        tokio::time::sleep(Duration::from_secs(10)).await;
                        Err("no answer within 10 s")
                    }
                };
                waiting.set(waiting.get() - 1);
                r
            }
        };
        let cadence = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let joined = race(attempt, cadence, || jitter, |_| {}).await;
        assert!((joined - t0.elapsed().as_secs_f64()).abs() < 1e-6);
        (joined, most.get())
    }

    #[tokio::test(start_paused = true)]
    async fn a_lighthouse_back_from_an_outage_is_found_within_three_seconds() {
        // Up at any moment in the first minute, with the jitter at both ends.
        for jitter in [0.0, 0.5, 0.999] {
            for tenth in 0..600 {
                let up = f64::from(tenth) / 10.0;
                let (joined, most) = reconnect_time(up, jitter).await;
                assert!(
                    joined - up <= 3.0 + 1e-9,
                    "up at {up} s, joined at {joined} s (jitter {jitter})"
                );
                assert!(most <= MAX_PENDING, "{most} attempts at once");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_attempt_at_a_time_would_miss_it() {
        // The check above fails for the old loop: attempt, wait for the
        // timeout, back off, retry. Up at 18.5 s, it sends at 18 s (too
        // soon), times out at 21 s and tries again at 23 s: 4.5 s late.
        let sequential = |up: f64| {
            let mut t = 0.0;
            let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
            loop {
                if let Some(j) = joins_at(t, up) {
                    break j;
                }
                t += 10.0 + b.next(0.5).as_secs_f64();
            }
        };
        assert_eq!(sequential(18.5), 23.0);
        let (raced, _) = reconnect_time(18.5, 0.5).await;
        assert!(raced - 18.5 <= 3.0, "raced joined at {raced}");
    }

    #[tokio::test(start_paused = true)]
    async fn every_failure_is_reported_and_the_race_goes_on() {
        let tries = Rc::new(Cell::new(0u32));
        let errors = RefCell::new(Vec::new());
        let attempt = || {
            let tries = tries.clone();
            async move {
                tries.set(tries.get() + 1);
                let n = tries.get();
                // Fails fast (a name that does not resolve) three times.
                if n <= 3 {
                    Err(format!("attempt {n}"))
                } else {
                    Ok(n)
                }
            }
        };
        let t0 = Instant::now();
        let cadence = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let won = race(attempt, cadence, || 0.5, |e| errors.borrow_mut().push(e)).await;
        assert_eq!(won, 4);
        assert_eq!(*errors.borrow(), ["attempt 1", "attempt 2", "attempt 3"]);
        // Fast failures wait for the cadence: 1 + 2 + 4 s.
        assert_eq!(t0.elapsed(), Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_that_never_end_are_capped() {
        let started = Rc::new(Cell::new(0usize));
        let attempt = || {
            let started = started.clone();
            async move {
                started.set(started.get() + 1);
                std::future::pending::<Result<(), ()>>().await
            }
        };
        let cadence = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        let r = tokio::time::timeout(
            Duration::from_secs(60),
            race(attempt, cadence, || 0.5, |_| {}),
        )
        .await;
        assert!(r.is_err());
        assert_eq!(started.get(), MAX_PENDING);
    }

    #[test]
    fn a_session_that_held_reconnects_at_once_a_short_one_backs_off() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        assert_eq!(
            after_session(Duration::from_secs(2), &mut b, 0.5),
            Duration::from_secs(1)
        );
        assert_eq!(
            after_session(Duration::from_secs(2), &mut b, 0.5),
            Duration::from_secs(2)
        );
        assert_eq!(after_session(STABLE, &mut b, 0.5), Duration::ZERO);
        assert_eq!(
            after_session(Duration::ZERO, &mut b, 0.5),
            Duration::from_secs(1)
        );
    }
}
