//! Random ids of the invoke path (request ids, X-Ray trace ids, an alias's weighted pick)
//! without a system call each.
//!
//! `uuid::Uuid::new_v4` asks the kernel for its 16 bytes every time (`getrandom(2)`), and a warm
//! call used to make three of them. Here each thread seeds a SplitMix64 generator once from the
//! kernel and draws from it after that: the ids keep their form (a request id is a version 4
//! UUID) and stay unique in practice (2^64 distinct outputs per thread, each thread from its own
//! 64-bit seed). They are identifiers, not secrets: nothing relies on them being unguessable.

use std::cell::Cell;

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let (a, b) = uuid::Uuid::new_v4().as_u64_pair();
    a ^ b.rotate_left(29)
}

/// The next 64 random bits of this thread's generator (SplitMix64).
pub fn random_u64() -> u64 {
    STATE.with(|s| {
        let x = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        s.set(x);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

/// 16 random bytes.
pub fn random_bytes() -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&random_u64().to_le_bytes());
    b[8..].copy_from_slice(&random_u64().to_le_bytes());
    b
}

/// A fresh version 4 UUID.
pub fn uuid_v4() -> uuid::Uuid {
    uuid::Builder::from_random_bytes(random_bytes()).into_uuid()
}

/// A fresh request id: a version 4 UUID, lower-case and hyphenated, as Lambda's.
pub fn request_id() -> String {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid_v4().hyphenated().encode_lower(&mut buf).to_owned()
}

/// An X-Ray trace header, `Root=1-<epoch seconds, 8 hex>-<root, 16 + 8 hex>;Parent=<16 hex>;Sampled=0`,
/// written digit by digit into one allocation (it is made for every invocation).
pub fn trace_header(secs: u64, root: u64, root_low: u32, parent: u64) -> String {
    let mut out = String::with_capacity(80);
    out.push_str("Root=1-");
    push_hex(&mut out, secs, 8);
    out.push('-');
    push_hex(&mut out, root, 16);
    push_hex(&mut out, u64::from(root_low), 8);
    out.push_str(";Parent=");
    push_hex(&mut out, parent, 16);
    out.push_str(";Sampled=0");
    out
}

/// `value` in lower-case hex, zero-padded to at least `width` digits (as `{:0width$x}`).
fn push_hex(out: &mut String, value: u64, width: usize) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digits = (16 - value.leading_zeros() as usize / 4).max(width).min(16);
    for i in (0..digits).rev() {
        out.push(DIGITS[((value >> (i * 4)) & 0xf) as usize] as char);
    }
}

/// A uniform draw from [0, 1).
pub fn random_unit() -> f64 {
    (random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_headers_read_as_the_format_string_did() {
        for (secs, root, low, parent) in [
            (0u64, 0u64, 0u32, 0u64),
            (0x6b0e_1b62, 0x51c1_c620_a000_0001, 0xdead_beef, u64::MAX),
            (1, 0xf, 0x10, 0x100),
            (u64::MAX, u64::MAX, u32::MAX, 0),
            (0x1_0000_0000, 1 << 63, 1 << 31, 1 << 60),
        ] {
            assert_eq!(
                trace_header(secs, root, low, parent),
                format!("Root=1-{secs:08x}-{root:016x}{low:08x};Parent={parent:016x};Sampled=0")
            );
        }
    }

    #[test]
    fn request_ids_are_distinct_version_4_uuids() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let id = request_id();
            let parsed = uuid::Uuid::parse_str(&id).unwrap();
            assert_eq!(parsed.get_version_num(), 4, "{id}");
            assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122, "{id}");
            assert_eq!(id, parsed.hyphenated().to_string(), "lower-case and hyphenated");
            assert!(seen.insert(id), "a request id came twice");
        }
    }

    #[test]
    fn threads_draw_different_ids() {
        let a = std::thread::spawn(request_id).join().unwrap();
        let b = std::thread::spawn(request_id).join().unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn unit_draws_stay_in_range() {
        for _ in 0..10_000 {
            let u = random_unit();
            assert!((0.0..1.0).contains(&u), "{u}");
        }
    }
}
