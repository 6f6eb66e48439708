//! `kiln_model::FunctionRef::parse` with an arbitrary path label and query qualifier.
//!
//! The input is split at its first `0xff` byte: before it the `FunctionName` label, after it the
//! `?Qualifier=` value (absent when there is no `0xff`). Both are taken lossily as UTF-8.
#![no_main]

use kiln_model::{FunctionName, FunctionRef, Qualifier};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (name, query) = match data.iter().position(|&b| b == 0xff) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let name = String::from_utf8_lossy(name);
    let query = query.map(String::from_utf8_lossy);
    let parsed = FunctionRef::parse(&name, query.as_deref());
    match parsed {
        Ok(r) => {
            // What parsed is a valid name, and parsing its parts again gives the same thing.
            let n = r.name.as_str();
            assert!(!n.is_empty() && n.len() <= 64, "{n:?}");
            assert_eq!(FunctionName::parse(n).as_ref(), Ok(&r.name));
            assert!(name.len() <= 170);
            if let Some(q) = &r.qualifier {
                let shown = q.to_string();
                assert_eq!(Qualifier::parse(&shown).as_ref(), Ok(q), "{shown:?}");
                // A qualifier from the query may make `name:qualifier` longer than the 170
                // a path label may have; below that, it must parse back the same.
                let joined = format!("{n}:{shown}");
                if joined.len() <= 170 {
                    let again = FunctionRef::parse(&joined, None).expect("name:qualifier of a parsed ref parses");
                    assert_eq!(again, r);
                }
            } else {
                assert_eq!(FunctionRef::parse(n, None).as_ref(), Ok(&r));
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
