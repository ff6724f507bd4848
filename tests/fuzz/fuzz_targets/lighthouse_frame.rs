//! Lighthouse frames, both directions: `[u32 length][JSON body]`, as the
//! Lighthouse reads a node's and a node reads the Lighthouse's.
#![no_main]
use flatnet_wire::lighthouse::{check_len, decode_body, LighthouseMsg, NodeMsg};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((prefix, body)) = data.split_first_chunk::<4>() {
        if let Ok(n) = check_len(*prefix) {
            let body = &body[..n.min(body.len())];
            let _ = decode_body::<NodeMsg>(body);
            let _ = decode_body::<LighthouseMsg>(body);
        }
    }
    let _ = decode_body::<NodeMsg>(data);
    let _ = decode_body::<LighthouseMsg>(data);
});
