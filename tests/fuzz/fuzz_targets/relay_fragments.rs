//! Relay payloads as a member sends them: `[u32 source][u8 len][payload]`
//! records fed to one reassembler, which must stay bounded and never panic.
#![no_main]
use std::time::{Duration, Instant};

use flatnetd::lighthouse::relay::{Reassembler, MAX_PENDING};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut r = Reassembler::default();
    let mut rest = data;
    let mut step = 0u64;
    while let Some((head, tail)) = rest.split_first_chunk::<5>() {
        let src = u32::from(head[0] % 4);
        let len = usize::from(head[4]).min(tail.len());
        let (payload, tail) = tail.split_at(len);
        step += 1;
        let now = t0 + Duration::from_millis(step * u64::from(head[1] % 64));
        let _ = r.push(src, payload, now);
        assert!(r.pending() <= MAX_PENDING);
        rest = tail;
    }
});
