//! Who may hold a place among the connections that have not proven their
//! key yet, sans I/O (the caller passes the time and closes connections).
//!
//! Every connection holds a slot from its first packet until its key proof
//! verifies (or fails, or [`crate::server`]'s handshake timeout ends it).
//! Slots are few ([`MAX_UNPROVEN`]) so that strangers cannot grow the
//! Lighthouse's memory, and one address may hold only
//! [`MAX_UNPROVEN_PER_IP`]. A flood from many addresses used to fill the
//! rest and keep every honest join out: each slot was held for the whole
//! timeout, and a newcomer found them all taken.
//!
//! Now a newcomer, when the slots are full, takes the place of the **oldest
//! connection of the address holding the most slots**, unless its own
//! address already holds as many, among connections that have held their
//! slot for [`EVICTABLE_AFTER`] at least. An honest node normally proves its
//! key within a few round trips of getting its slot, before it can be
//! evicted, so a restart storm of honest nodes is served [`MAX_UNPROVEN`] at
//! a time, as before (on a loaded machine a slow handshake may still be
//! evicted; docs/benchmarks.md). A flood that never proves
//! anything loses each slot a quarter second after taking it: to keep
//! newcomers out it must win every freed slot against them, with a full
//! QUIC handshake (and a Retry round trip once busy) each time, where
//! holding all slots used to cost it [`MAX_UNPROVEN`] connections per
//! handshake timeout. An address that lost a place this way may not evict
//! anyone for [`EVICTED_COOLDOWN`], so a flood cannot simply win back the
//! next place that becomes evictable. Flooding from few addresses
//! evicts only itself.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use tokio::sync::Notify;

/// Connections that have not proven their key yet, at once.
pub const MAX_UNPROVEN: usize = 64;
/// The same, per source address.
pub const MAX_UNPROVEN_PER_IP: usize = 8;
/// An address whose connection was evicted (it held a place without
/// proving a key) may not evict anyone for this long; it may still take a
/// free place. A flood cannot win back the place it just lost, while
/// honest nodes behind that address (a restart storm through one NAT) are
/// held back only while every place is taken.
pub const EVICTED_COOLDOWN: Duration = Duration::from_secs(2);
/// Addresses remembered in cooldown, at most.
const MAX_COOLING: usize = 4096;
/// A connection may be evicted for a newcomer once it held its slot this
/// long: longer than an honest join takes to prove its key (a few round
/// trips), far shorter than the handshake timeout a flood used to hold.
pub const EVICTABLE_AFTER: Duration = Duration::from_millis(250);

/// What [`Admission::enter`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// A slot, `id`; when `evict` is set, that connection must be closed
    /// now (its slot is already given away).
    Yes { id: u64, evict: Option<u64> },
    /// No slot: refuse the connection.
    No,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    ip: IpAddr,
    since: Instant,
}

/// The unproven connections and their addresses.
#[derive(Debug, Default)]
pub struct Admission {
    held: HashMap<u64, Held>,
    per_ip: HashMap<IpAddr, usize>,
    /// Addresses that lost a place to eviction, until when they may not
    /// evict anyone.
    cooling: HashMap<IpAddr, Instant>,
    next: u64,
}

impl Admission {
    /// Slots in use.
    pub fn busy(&self) -> usize {
        self.held.len()
    }

    /// A slot for a new connection from `ip`, evicting another if the
    /// slots are full and a fairer owner for one exists.
    pub fn enter(&mut self, ip: IpAddr, now: Instant) -> Admit {
        let mine = self.per_ip.get(&ip).copied().unwrap_or(0);
        if mine >= MAX_UNPROVEN_PER_IP {
            return Admit::No;
        }
        let mut evict = None;
        if self.held.len() >= MAX_UNPROVEN {
            // A free place it may take; someone else's only if it did not
            // just lose one itself.
            if self.cooling.get(&ip).is_some_and(|until| now < *until) {
                return Admit::No;
            }
            let Some(victim) = self.victim(mine, now) else {
                return Admit::No;
            };
            if let Some(h) = self.held.get(&victim) {
                self.cool(h.ip, now);
            }
            self.leave(victim);
            evict = Some(victim);
        }
        self.next += 1;
        let id = self.next;
        self.held.insert(id, Held { ip, since: now });
        *self.per_ip.entry(ip).or_default() += 1;
        Admit::Yes { id, evict }
    }

    /// `ip` lost a place without proving a key: for [`EVICTED_COOLDOWN`]
    /// it may take only free places, not evict anyone.
    fn cool(&mut self, ip: IpAddr, now: Instant) {
        if self.cooling.len() >= MAX_COOLING {
            self.cooling.retain(|_, until| now < *until);
        }
        if self.cooling.len() < MAX_COOLING || self.cooling.contains_key(&ip) {
            self.cooling.insert(ip, now + EVICTED_COOLDOWN);
        }
    }

    /// The connection `id` proved its key, failed, or ended.
    pub fn leave(&mut self, id: u64) {
        let Some(h) = self.held.remove(&id) else {
            return;
        };
        if let Some(n) = self.per_ip.get_mut(&h.ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&h.ip);
            }
        }
    }

    /// The oldest evictable slot of the address holding the most, if that
    /// address holds more than `mine` (the newcomer's own count).
    fn victim(&self, mine: usize, now: Instant) -> Option<u64> {
        let old_enough = |h: &Held| now.saturating_duration_since(h.since) >= EVICTABLE_AFTER;
        let most = self
            .held
            .values()
            .filter(|h| old_enough(h))
            .filter_map(|h| self.per_ip.get(&h.ip).copied())
            .max()?;
        if most <= mine {
            return None;
        }
        self.held
            .iter()
            .filter(|(_, h)| old_enough(h) && self.per_ip.get(&h.ip) == Some(&most))
            .min_by_key(|(id, h)| (h.since, **id))
            .map(|(id, _)| *id)
    }
}

/// [`Admission`] shared by the accept loops: each slot can be told it was
/// evicted, and gives its place back when dropped.
#[derive(Clone, Default)]
pub struct Unproven(Arc<Mutex<Shared>>);

#[derive(Default)]
struct Shared {
    admission: Admission,
    /// How to tell each slot's connection that it was evicted.
    wake: HashMap<u64, Arc<Notify>>,
    evicted: u64,
}

/// One connection's place in [`Unproven`].
pub struct Slot {
    set: Unproven,
    id: u64,
    evicted: Arc<Notify>,
}

impl Unproven {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Slots in use.
    pub fn busy(&self) -> usize {
        self.lock().admission.busy()
    }

    /// Connections evicted so far (for logs and tests).
    pub fn evicted(&self) -> u64 {
        self.lock().evicted
    }

    /// A place for a connection from `ip`, evicting another connection's if
    /// [`Admission::enter`] says so; `None`: refuse it.
    pub fn enter(&self, ip: IpAddr) -> Option<Slot> {
        let mut g = self.lock();
        let Admit::Yes { id, evict } = g.admission.enter(ip, Instant::now()) else {
            return None;
        };
        if let Some(v) = evict {
            g.evicted += 1;
            if let Some(n) = g.wake.remove(&v) {
                // Stores a permit: wakes the victim even if it is not
                // waiting at this moment.
                n.notify_one();
            }
        }
        let evicted = Arc::new(Notify::new());
        g.wake.insert(id, evicted.clone());
        Some(Slot {
            set: self.clone(),
            id,
            evicted,
        })
    }
}

impl Slot {
    /// Completes when a newcomer took this slot: close the connection.
    pub async fn evicted(&self) {
        self.evicted.notified().await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut g = self.set.lock();
        g.wake.remove(&self.id);
        g.admission.leave(self.id);
    }
}

#[cfg(test)]
mod tests {
    use std::{net::Ipv4Addr, time::Duration};

    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0xcb00_7100 + n))
    }

    fn id(a: Admit) -> u64 {
        match a {
            Admit::Yes { id, .. } => id,
            Admit::No => panic!("refused"),
        }
    }

    #[test]
    fn one_address_holds_at_most_its_share() {
        let t = Instant::now();
        let mut a = Admission::default();
        for _ in 0..MAX_UNPROVEN_PER_IP {
            id(a.enter(ip(1), t));
        }
        assert_eq!(a.enter(ip(1), t), Admit::No);
        assert!(matches!(a.enter(ip(2), t), Admit::Yes { evict: None, .. }));
    }

    #[test]
    fn when_full_a_newcomer_evicts_the_oldest_of_the_biggest_holder() {
        let t0 = Instant::now();
        let mut a = Admission::default();
        // Eight addresses fill every slot, 8 each; address 3 came first.
        for n in [3, 1, 2, 4, 5, 6, 7, 8] {
            for k in 0..MAX_UNPROVEN_PER_IP as u64 {
                id(a.enter(ip(n), t0 + Duration::from_millis(n as u64 * 10 + k)));
            }
        }
        assert_eq!(a.busy(), MAX_UNPROVEN);
        let first_of_1 = 1 + MAX_UNPROVEN_PER_IP as u64; // ids start at 1; ip(3) took 1..=8
                                                         // Nobody has held a slot for EVICTABLE_AFTER yet: no room.
        assert_eq!(a.enter(ip(100), t0 + Duration::from_millis(200)), Admit::No);
        match a.enter(ip(100), t0 + Duration::from_secs(1)) {
            Admit::Yes { evict, .. } => assert_eq!(evict, Some(first_of_1)),
            Admit::No => panic!("an honest newcomer was refused"),
        }
        assert_eq!(a.busy(), MAX_UNPROVEN);
        // A flooder that already holds the most cannot evict anyone.
        assert_eq!(a.enter(ip(2), t0 + Duration::from_secs(1)), Admit::No);
    }

    #[test]
    fn a_newcomer_is_safe_until_it_could_have_proven_its_key() {
        let t0 = Instant::now();
        let mut a = Admission::default();
        // 100 flooding addresses, one slot each, reopening every 10 ms.
        let mut now = t0;
        for n in 0..1000u32 {
            now += Duration::from_millis(10);
            let _ = a.enter(ip(1000 + n % 100), now);
        }
        assert_eq!(a.busy(), MAX_UNPROVEN);
        // The honest node gets a slot: the flood's oldest is old enough to go.
        let admitted = now;
        let mine = id(a.enter(ip(7), now));
        // The flood goes on, ten times faster; the honest slot stays at
        // least EVICTABLE_AFTER, time enough to prove a key.
        let mut evicted_at = None;
        for n in 0..2000u32 {
            now += Duration::from_millis(1);
            if let Admit::Yes { evict: Some(v), .. } = a.enter(ip(3000 + n), now) {
                if v == mine {
                    evicted_at = Some(now);
                    break;
                }
            }
        }
        let evicted_at =
            evicted_at.expect("a connection that never proves anything goes eventually");
        assert!(evicted_at >= admitted + EVICTABLE_AFTER);
    }

    #[test]
    fn an_address_that_lost_a_place_waits_before_the_next() {
        let t0 = Instant::now();
        let mut a = Admission::default();
        for n in 0..MAX_UNPROVEN as u32 {
            id(a.enter(ip(n), t0));
        }
        let later = t0 + EVICTABLE_AFTER;
        // A newcomer evicts ip(0)'s place (the oldest; ids break the tie).
        assert!(matches!(
            a.enter(ip(500), later),
            Admit::Yes { evict: Some(1), .. }
        ));
        // ip(0) may not come straight back by evicting someone else ...
        assert_eq!(a.enter(ip(0), later), Admit::No);
        // ... but it may take a free place ...
        a.leave(2);
        let free = id(a.enter(ip(0), later));
        a.leave(free);
        a.leave(3);
        id(a.enter(ip(501), later));
        id(a.enter(ip(502), later));
        assert_eq!(a.busy(), MAX_UNPROVEN);
        // ... and evict again once its cooldown is over.
        let after = later + EVICTED_COOLDOWN;
        assert!(matches!(
            a.enter(ip(0), after),
            Admit::Yes { evict: Some(_), .. }
        ));
    }

    #[test]
    fn a_restart_storm_of_honest_nodes_never_evicts_itself() {
        let t0 = Instant::now();
        let mut a = Admission::default();
        // 5000 nodes arrive within 100 ms; each proves its key in 20 ms.
        let mut live: Vec<(u64, Instant)> = Vec::new();
        let (mut evictions, mut proven) = (0, 0);
        for n in 0..5000u32 {
            let now = t0 + Duration::from_micros(u64::from(n) * 20);
            live.retain(|(i, at)| {
                let done = now.saturating_duration_since(*at) >= Duration::from_millis(20);
                if done {
                    a.leave(*i);
                    proven += 1;
                }
                !done
            });
            if let Admit::Yes { id, evict } = a.enter(ip(10_000 + n), now) {
                evictions += usize::from(evict.is_some());
                live.push((id, now));
            }
        }
        assert_eq!(evictions, 0);
        assert!(proven > 0);
    }

    #[tokio::test]
    async fn an_evicted_slot_is_told_and_places_come_back() {
        let u = Unproven::default();
        let first = u.enter(ip(1)).unwrap();
        let mut rest: Vec<Slot> = (2..=MAX_UNPROVEN as u32)
            .map(|n| u.enter(ip(n)).unwrap())
            .collect();
        assert_eq!(u.busy(), MAX_UNPROVEN);
        // Nobody is evictable yet.
        assert!(u.enter(ip(499)).is_none());
        std::thread::sleep(EVICTABLE_AFTER + std::time::Duration::from_millis(10));
        // Everyone holds one: a newcomer evicts the oldest, `first`.
        let newcomer = u.enter(ip(500)).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), first.evicted())
            .await
            .expect("the oldest was told");
        assert_eq!(u.evicted(), 1);
        assert_eq!(u.busy(), MAX_UNPROVEN);
        drop(first); // its place was already given away
        assert_eq!(u.busy(), MAX_UNPROVEN);
        rest.clear();
        drop(newcomer);
        assert_eq!(u.busy(), 0);
        assert!(u.lock().wake.is_empty(), "nothing left behind");
    }

    #[test]
    fn slots_come_back() {
        let t = Instant::now();
        let mut a = Admission::default();
        let ids: Vec<u64> = (0..MAX_UNPROVEN as u32)
            .map(|n| id(a.enter(ip(n), t)))
            .collect();
        for i in ids {
            a.leave(i);
        }
        assert_eq!(a.busy(), 0);
        assert!(a.per_ip.is_empty());
        a.leave(12345); // unknown: nothing happens
    }
}
