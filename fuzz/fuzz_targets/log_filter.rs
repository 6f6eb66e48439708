//! `kiln_engine::log_filter::FilterPattern::parse` with an arbitrary pattern, then `matches` on
//! an arbitrary message.
//!
//! The input is split at its first `0xff` byte: before it the `filterPattern`, after it the
//! message (both taken lossily as UTF-8). A pattern that parses must match without panicking;
//! the empty pattern matches everything.
#![no_main]

use kiln_engine::log_filter::FilterPattern;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (pattern, message) = match data.iter().position(|&b| b == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let pattern = String::from_utf8_lossy(pattern);
    let message = String::from_utf8_lossy(message);
    match FilterPattern::parse(&pattern) {
        Ok(p) => {
            let hit = p.matches(&message);
            if pattern.trim().is_empty() {
                assert!(hit);
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
