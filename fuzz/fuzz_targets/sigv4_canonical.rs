//! `kiln_api::auth`: the canonical-request builder and the whole verifier on arbitrary requests.
//!
//! The body is `kiln_api::auth::fuzz_canonical` (so that `cargo test -p kiln-api` runs the same
//! checks over generated inputs): the input is split at `0xff` bytes into method, path, query,
//! header lines (`name:value`, separated by `\n`) and body. Building the canonical request never
//! panics and is deterministic, its path part holds only unreserved bytes, `/` and `%XX`;
//! `verify` never accepts a key whose secret was not used and answers the same twice; the same
//! request signed with the key verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kiln_api::auth::fuzz_canonical(data);
});
