//! The REST API's request bodies: arbitrary bytes deserialized with serde_json into
//! `CreateFunctionIn`, `UpdateCodeIn` and `ConfigIn`, what the handlers then do with them first
//! (`passthrough`, base64-decoding `ZipFile`), and `unb64` on its own.
#![no_main]

use kiln_api::wire::{b64, unb64, ConfigIn, CreateFunctionIn, UpdateCodeIn};
use libfuzzer_sys::fuzz_target;

fn zip_file(z: Option<&str>) {
    if let Some(z) = z {
        if let Some(bytes) = unb64(z) {
            assert_eq!(unb64(&b64(&bytes)).as_deref(), Some(&bytes[..]));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(mut c) = serde_json::from_slice::<CreateFunctionIn>(data) {
        zip_file(c.code.as_ref().and_then(|c| c.zip_file.as_deref()));
        let _ = c.config.passthrough();
        let _ = format!("{c:?}");
    }
    if let Ok(u) = serde_json::from_slice::<UpdateCodeIn>(data) {
        zip_file(u.code.zip_file.as_deref());
        let _ = format!("{u:?}");
    }
    if let Ok(mut c) = serde_json::from_slice::<ConfigIn>(data) {
        let out = c.passthrough();
        assert!(out.len() <= 6);
        let _ = format!("{c:?}");
    }
    // The raw input as a base64 string, and as bytes to encode.
    let s = String::from_utf8_lossy(data);
    if let Some(bytes) = unb64(&s) {
        // Anything accepted must be canonical enough to survive a round trip.
        assert_eq!(unb64(&b64(&bytes)).as_deref(), Some(&bytes[..]));
    }
    assert_eq!(unb64(&b64(data)).as_deref(), Some(data));
});
