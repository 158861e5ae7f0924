//! Arbitrary bytes into the generic adapter's `accept` (signed and unsigned) and
//! `normalize`; any panic is a finding.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    trackstream_carriers_fuzz::exercise("generic", data);
});
