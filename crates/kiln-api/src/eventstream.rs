//! AWS's event stream encoding (`application/vnd.amazon.eventstream`), the framing of
//! InvokeWithResponseStream's answer.
//!
//! A message is a prelude (total length and headers length, both big-endian `u32`, then the
//! CRC-32 of those 8 bytes), the headers, the payload, and the CRC-32 of everything before it.
//! A header is a one-byte name length, the name, a type byte (7: string), a big-endian `u16`
//! value length and the value. Every message kiln sends is an event (`:message-type: event`)
//! with its `:event-type` and `:content-type`; this is what botocore's `eventstream.py` and the
//! other SDKs decode.

use bytes::{BufMut, Bytes, BytesMut};

/// The header value type of a string.
const HEADER_STRING: u8 = 7;

/// One event message: `event_type` (e.g. `PayloadChunk`), its payload's content type, payload.
pub fn event(event_type: &str, content_type: &str, payload: &[u8]) -> Bytes {
    let mut headers = BytesMut::with_capacity(64);
    for (name, value) in [(":event-type", event_type), (":content-type", content_type), (":message-type", "event")] {
        headers.put_u8(name.len() as u8);
        headers.put_slice(name.as_bytes());
        headers.put_u8(HEADER_STRING);
        headers.put_u16(value.len() as u16);
        headers.put_slice(value.as_bytes());
    }
    let total = 12 + headers.len() + payload.len() + 4;
    let mut m = BytesMut::with_capacity(total);
    m.put_u32(total as u32);
    m.put_u32(headers.len() as u32);
    let prelude_crc = crc32(&m[..8]);
    m.put_u32(prelude_crc);
    m.put_slice(&headers);
    m.put_slice(payload);
    let crc = crc32(&m);
    m.put_u32(crc);
    m.freeze()
}

/// The CRC-32 (IEEE 802.3, as zlib computes it) the encoding uses.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

const TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A decoded message's headers (name, value) and payload.
    pub(crate) type Message = (Vec<(String, String)>, Vec<u8>);

    /// The messages of an encoded stream, after checking both CRCs of each.
    pub(crate) fn decode(mut m: &[u8]) -> Vec<Message> {
        let mut out = Vec::new();
        while !m.is_empty() {
            let total = u32::from_be_bytes(m[0..4].try_into().unwrap()) as usize;
            let hlen = u32::from_be_bytes(m[4..8].try_into().unwrap()) as usize;
            assert_eq!(u32::from_be_bytes(m[8..12].try_into().unwrap()), crc32(&m[..8]), "prelude crc");
            assert_eq!(
                u32::from_be_bytes(m[total - 4..total].try_into().unwrap()),
                crc32(&m[..total - 4]),
                "message crc"
            );
            let mut h = &m[12..12 + hlen];
            let mut headers = Vec::new();
            while !h.is_empty() {
                let n = h[0] as usize;
                let name = String::from_utf8(h[1..=n].to_vec()).unwrap();
                assert_eq!(h[1 + n], 7);
                let vlen = u16::from_be_bytes([h[2 + n], h[3 + n]]) as usize;
                let value = String::from_utf8(h[4 + n..4 + n + vlen].to_vec()).unwrap();
                headers.push((name, value));
                h = &h[4 + n + vlen..];
            }
            out.push((headers, m[12 + hlen..total - 4].to_vec()));
            m = &m[total..];
        }
        out
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn an_event_round_trips_with_its_headers_and_payload() {
        let mut both = event("PayloadChunk", "application/octet-stream", b"hello").to_vec();
        both.extend_from_slice(&event("InvokeComplete", "application/json", b"{}"));
        let got = decode(&both);
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0].0,
            vec![
                (":event-type".to_string(), "PayloadChunk".to_string()),
                (":content-type".to_string(), "application/octet-stream".to_string()),
                (":message-type".to_string(), "event".to_string()),
            ]
        );
        assert_eq!(got[0].1, b"hello");
        assert_eq!(got[1].1, b"{}");
    }

    #[test]
    fn an_empty_payload_is_a_valid_message() {
        let m = event("PayloadChunk", "application/octet-stream", b"");
        assert_eq!(decode(&m)[0].1, b"");
    }
}
