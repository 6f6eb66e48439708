//! `kiln_store::unzip::inspect` on arbitrary bytes and, when it accepts them, `extract` into a
//! scratch directory: must never panic, never write outside the destination, and never leave a
//! link there that resolves outside it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kiln_fuzz::check_unzip(data);
});
