//! CNI stdin: the network configuration a runtime passes the plugin.
#![no_main]
use flatnet_cni::cni::conf::NetConf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = NetConf::parse(data);
});
