//! Splitting WireGuard datagrams to fit QUIC datagrams, sans I/O.
//!
//! The Lighthouse relays `[u32 node id][payload]` and never looks inside the
//! payload, so the two nodes agree on its format between themselves. A full
//! tunnel packet (1420 + 32 bytes of WireGuard) is bigger than a QUIC
//! datagram can be on a 1500-byte path (QUIC adds its own header, tag and
//! the relay header; before MTU discovery quinn assumes 1200 bytes), so
//! large datagrams travel in pieces:
//!
//! ```text
//! whole:    [WireGuard datagram]                first byte 1..=4
//! fragment: [0xF0][id u16 BE][index][count][piece]
//! ```
//!
//! Pieces of one datagram are reassembled by (source node, id); incomplete
//! ones are dropped after [`REASSEMBLY_TIMEOUT`] (WireGuard and the inner
//! TCP recover from a lost datagram as from any loss). Each source has its
//! own share ([`MAX_PER_SOURCE`]); when room runs out the oldest partial
//! datagram of the source holding the most goes first, so one member
//! sending endless first pieces only ever evicts its own.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

pub const FRAGMENT: u8 = 0xF0;
const HEADER: usize = 5;
/// Incomplete datagrams are dropped after this.
pub const REASSEMBLY_TIMEOUT: Duration = Duration::from_secs(2);
/// At most this many datagrams are reassembled at once (all sources).
pub const MAX_PENDING: usize = 256;
/// At most this many from one source node.
pub const MAX_PER_SOURCE: usize = 32;
const MAX_PIECES: usize = 16;

/// Split `d` into payloads of at most `max` bytes each.
pub fn split(d: &[u8], max: usize, id: u16) -> Vec<Vec<u8>> {
    if d.len() <= max {
        return vec![d.to_vec()];
    }
    let room = max.saturating_sub(HEADER).max(1);
    let count = d.len().div_ceil(room);
    if count > MAX_PIECES {
        return Vec::new();
    }
    d.chunks(room)
        .enumerate()
        .map(|(i, c)| {
            let mut v = Vec::with_capacity(HEADER + c.len());
            v.push(FRAGMENT);
            v.extend_from_slice(&id.to_be_bytes());
            v.push(i as u8);
            v.push(count as u8);
            v.extend_from_slice(c);
            v
        })
        .collect()
}

struct Partial {
    pieces: Vec<Option<Vec<u8>>>,
    started: Instant,
}

/// Puts fragmented datagrams back together.
#[derive(Default)]
pub struct Reassembler {
    pending: HashMap<(u32, u16), Partial>,
}

impl Reassembler {
    /// A relay payload from node `src`: returns a whole datagram when one
    /// is complete (the payload itself when it was not fragmented).
    pub fn push(&mut self, src: u32, payload: &[u8], now: Instant) -> Option<Vec<u8>> {
        let (&first, rest) = payload.split_first()?;
        if first != FRAGMENT {
            return Some(payload.to_vec());
        }
        if rest.len() < HEADER - 1 {
            return None;
        }
        let id = u16::from_be_bytes([rest[0], rest[1]]);
        let (index, count) = (usize::from(rest[2]), usize::from(rest[3]));
        if !(2..=MAX_PIECES).contains(&count) || index >= count {
            return None;
        }
        self.pending
            .retain(|_, p| now.saturating_duration_since(p.started) < REASSEMBLY_TIMEOUT);
        if !self.pending.contains_key(&(src, id)) {
            self.make_room(src);
        }
        let p = self.pending.entry((src, id)).or_insert_with(|| Partial {
            pieces: vec![None; count],
            started: now,
        });
        if p.pieces.len() != count {
            self.pending.remove(&(src, id));
            return None;
        }
        p.pieces[index] = Some(rest[4..].to_vec());
        if p.pieces.iter().all(Option::is_some) {
            let p = self.pending.remove(&(src, id))?;
            return Some(p.pieces.into_iter().flatten().flatten().collect());
        }
        None
    }

    /// Before a new datagram from `src`: evict `src`'s oldest when it is at
    /// its share, else (when full) the oldest of the source holding most.
    fn make_room(&mut self, src: u32) {
        let mut per: HashMap<u32, usize> = HashMap::new();
        for (s, _) in self.pending.keys() {
            *per.entry(*s).or_default() += 1;
        }
        let victim = if per.get(&src).copied().unwrap_or(0) >= MAX_PER_SOURCE {
            Some(src)
        } else if self.pending.len() >= MAX_PENDING {
            per.into_iter().max_by_key(|(_, n)| *n).map(|(s, _)| s)
        } else {
            None
        };
        let Some(victim) = victim else { return };
        let oldest = self
            .pending
            .iter()
            .filter(|((s, _), _)| *s == victim)
            .min_by_key(|(_, p)| p.started)
            .map(|(k, _)| *k);
        if let Some(k) = oldest {
            self.pending.remove(&k);
        }
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_datagrams_pass_whole() {
        let d = [4u8, 0, 0, 0, 9, 9];
        assert_eq!(split(&d, 1200, 1), vec![d.to_vec()]);
        let mut r = Reassembler::default();
        assert_eq!(r.push(7, &d, Instant::now()), Some(d.to_vec()));
    }

    #[test]
    fn large_datagrams_split_and_reassemble_in_any_order() {
        let d: Vec<u8> = (0..1452u32).map(|i| i as u8).collect();
        let parts = split(&d, 1100, 42);
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.len() <= 1100 && p[0] == FRAGMENT));
        let now = Instant::now();
        let mut r = Reassembler::default();
        assert_eq!(r.push(7, &parts[1], now), None);
        // Same id from another node is a different datagram.
        assert_eq!(r.push(8, &parts[0], now), None);
        assert_eq!(r.push(7, &parts[0], now), Some(d.clone()));
        assert_eq!(r.pending(), 1);
    }

    #[test]
    fn stale_and_hostile_fragments_are_dropped() {
        let d = vec![1u8; 3000];
        let parts = split(&d, 1000, 1);
        let t0 = Instant::now();
        let mut r = Reassembler::default();
        r.push(7, &parts[0], t0);
        r.push(7, &parts[1], t0);
        // The last piece comes too late: the rest expired.
        let later = t0 + REASSEMBLY_TIMEOUT + Duration::from_millis(1);
        assert_eq!(r.push(7, &parts[2], later), None);
        assert_eq!(r.push(7, &[FRAGMENT, 0, 1, 5, 2, 0], t0), None);
        assert_eq!(r.push(7, &[FRAGMENT, 0, 1, 0, 1, 0], t0), None);
        assert_eq!(r.push(7, &[FRAGMENT, 0], t0), None);
        assert_eq!(r.push(7, &[], t0), None);
        // Bounded memory under a flood of first pieces.
        for id in 0..1000u16 {
            r.push(9, &[FRAGMENT, (id >> 8) as u8, id as u8, 0, 2, 0], later);
        }
        assert!(
            r.pending() <= MAX_PER_SOURCE + 1,
            "node 9's share, and 7's one"
        );
        assert!(split(&vec![0; 100_000], 1000, 1).is_empty());
    }

    #[test]
    fn a_flooding_source_cannot_starve_another() {
        let t0 = Instant::now();
        let mut r = Reassembler::default();
        let honest: Vec<u8> = (0..2400u32).map(|i| i as u8).collect();
        let mut done = 0;
        for round in 0..100u16 {
            // The flooder sends 50 fresh first pieces between each of the
            // honest node's two pieces.
            let parts = split(&honest, 1300, round);
            assert_eq!(r.push(7, &parts[0], t0), None);
            for k in 0..50u16 {
                let id = round.wrapping_mul(50).wrapping_add(k);
                r.push(9, &[FRAGMENT, (id >> 8) as u8, id as u8, 0, 2, 0], t0);
            }
            if r.push(7, &parts[1], t0).as_deref() == Some(&honest[..]) {
                done += 1;
            }
        }
        assert_eq!(done, 100);
        assert!(r.pending() <= MAX_PER_SOURCE + 1);
        // Many sources at once: still bounded, and the biggest pays.
        for src in 100..400u32 {
            r.push(src, &[FRAGMENT, 0, 1, 0, 2, 0], t0);
            r.push(src, &[FRAGMENT, 0, 2, 0, 2, 0], t0);
        }
        assert_eq!(r.pending(), MAX_PENDING);
    }
}
