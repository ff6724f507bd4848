//! The relay's queue toward one node: a fair share for every source.
//!
//! Relayed datagrams used to go straight into the destination's QUIC
//! connection, whose datagram buffer (1 MiB, oldest dropped first) does not
//! know who sent what: one member flooding a node filled it, and another
//! member's relayed traffic to that node waited behind the flood or was
//! dropped with it. Now each destination has a [`FairQueue`]: one short
//! queue per source node, served round robin, and QUIC's own buffer is
//! kept small so that the waiting happens here. A hog fills only its own
//! queue (its excess is dropped, counted as `fair_share`); every other
//! source's next datagram goes out after at most one of the hog's.
//!
//! While nothing waits and the connection has room, the relay sends at
//! once, without the queue: the queue is for sharing a backlog.
//!
//! [`FairQueue`] is sans I/O; [`RelayQueue`] adds the wake-up the
//! destination's sending task waits on.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Mutex, MutexGuard},
};

use bytes::Bytes;
use tokio::sync::Notify;

/// Datagrams queued per source, per destination.
pub const PER_SOURCE: usize = 64;
/// Datagrams queued per destination, all sources together.
pub const PER_DESTINATION: usize = 1024;

/// Round robin over the sources that have something queued.
#[derive(Debug, Default)]
pub struct FairQueue {
    queues: HashMap<u32, VecDeque<Bytes>>,
    /// Sources with a non-empty queue, in serving order.
    order: VecDeque<u32>,
    total: usize,
}

impl FairQueue {
    /// Queue `d` from `from`; false when it was dropped instead (that
    /// source's share is full, or the destination's and `from` already
    /// holds the most). When the destination is full and another source
    /// holds more, that source's oldest datagram makes room.
    pub fn push(&mut self, from: u32, d: Bytes) -> bool {
        let mine = self.queues.get(&from).map_or(0, VecDeque::len);
        if mine >= PER_SOURCE {
            return false;
        }
        if self.total >= PER_DESTINATION {
            let Some(q) = self.queues.values_mut().max_by_key(|q| q.len()) else {
                return false;
            };
            if q.len() <= mine + 1 {
                return false;
            }
            // At least two queued there: it stays in the serving order.
            q.pop_front();
            self.total -= 1;
        }
        let q = self.queues.entry(from).or_default();
        if q.is_empty() {
            self.order.push_back(from);
        }
        q.push_back(d);
        self.total += 1;
        true
    }

    /// The next datagram to send, and its source.
    pub fn pop(&mut self) -> Option<(u32, Bytes)> {
        let from = self.order.pop_front()?;
        let q = self.queues.get_mut(&from)?;
        let d = q.pop_front()?;
        self.total -= 1;
        if q.is_empty() {
            self.queues.remove(&from);
        } else {
            self.order.push_back(from);
        }
        Some((from, d))
    }

    /// Datagrams queued.
    pub fn len(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

/// A [`FairQueue`] shared between the sessions that relay to a node and
/// that node's sending task.
#[derive(Debug, Default)]
pub struct RelayQueue {
    q: Mutex<FairQueue>,
    ready: Notify,
}

impl RelayQueue {
    fn lock(&self) -> MutexGuard<'_, FairQueue> {
        self.q
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// See [`FairQueue::push`].
    pub fn push(&self, from: u32, d: Bytes) -> bool {
        let ok = self.lock().push(from, d);
        if ok {
            self.ready.notify_one();
        }
        ok
    }

    /// Whether nothing waits (the relay may then send straight away).
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// The next datagram, waiting for one.
    pub async fn next(&self) -> Bytes {
        loop {
            if let Some((_, d)) = self.lock().pop() {
                return d;
            }
            self.ready.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Bytes {
        Bytes::from(vec![n])
    }

    #[test]
    fn sources_take_turns() {
        let mut q = FairQueue::default();
        for i in 0..10 {
            assert!(q.push(1, d(i)));
        }
        assert!(q.push(2, d(100)));
        assert!(q.push(2, d(101)));
        let order: Vec<u32> = std::iter::from_fn(|| q.pop()).map(|(f, _)| f).collect();
        assert_eq!(order[..5], [1, 2, 1, 2, 1]);
        assert_eq!(order.len(), 12);
        assert!(q.is_empty());
    }

    #[test]
    fn a_hog_fills_only_its_own_share() {
        let mut q = FairQueue::default();
        let kept = (0..10_000).filter(|i| q.push(1, d(*i as u8))).count();
        assert_eq!(kept, PER_SOURCE);
        // Another source is not held back by the hog's backlog: its first
        // datagram is at most second in line.
        assert!(q.push(2, d(7)));
        let first_two: Vec<u32> = (0..2).filter_map(|_| q.pop()).map(|(f, _)| f).collect();
        assert!(first_two.contains(&2));
    }

    #[test]
    fn a_full_destination_makes_room_from_the_biggest_queue() {
        let mut q = FairQueue::default();
        for s in 0..(PER_DESTINATION / PER_SOURCE) as u32 {
            for i in 0..PER_SOURCE {
                assert!(q.push(s, d(i as u8)));
            }
        }
        assert_eq!(q.len(), PER_DESTINATION);
        // A newcomer still gets in: one of the biggest queues' oldest goes.
        assert!(q.push(5000, d(1)));
        assert_eq!(q.len(), PER_DESTINATION);
        // A source that holds the most cannot push others out for more.
        assert!(!q.push(0, d(2)));
        assert_eq!(std::iter::from_fn(|| q.pop()).count(), PER_DESTINATION);
    }

    #[tokio::test]
    async fn the_sender_is_woken() {
        let rq = std::sync::Arc::new(RelayQueue::default());
        let r = rq.clone();
        let got = tokio::spawn(async move { r.next().await });
        tokio::task::yield_now().await;
        assert!(rq.push(3, d(42)));
        let v = tokio::time::timeout(std::time::Duration::from_secs(1), got)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&v[..], &[42]);
    }
}
