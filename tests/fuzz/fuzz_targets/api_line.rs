//! One line of the local API (what the CNI and netavark plugins send).
#![no_main]
use flatnet_wire::{framing::decode, Request, Response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode::<Request>(data);
    let _ = decode::<Response>(data);
});
