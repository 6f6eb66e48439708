use super::*;
use base64::Engine as _;

/// Requests botocore signed (`gen_fixtures.py`), with what botocore computed.
const FIXTURES: &str = include_str!("botocore_fixtures.json");

struct Fixture {
    method: String,
    path: String,
    query: String,
    headers: http::HeaderMap,
    body: Vec<u8>,
    service: String,
    canonical_request: String,
    string_to_sign: String,
    authorization: String,
}

fn fixtures() -> (Keys, Vec<Fixture>) {
    let v: serde_json::Value = serde_json::from_str(FIXTURES).unwrap();
    let keys = Keys::parse(&format!(
        "[test]\naws_access_key_id = {}\naws_secret_access_key = {}\naccount_id = 111111111111\n",
        v["access_key_id"].as_str().unwrap(),
        v["secret"].as_str().unwrap()
    ))
    .unwrap();
    let s = |r: &serde_json::Value, k: &str| r[k].as_str().unwrap().to_string();
    let list = v["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let mut headers = http::HeaderMap::new();
            for h in r["headers"].as_array().unwrap() {
                let name = http::HeaderName::from_bytes(h[0].as_str().unwrap().as_bytes()).unwrap();
                headers.append(name, http::HeaderValue::from_str(h[1].as_str().unwrap()).unwrap());
            }
            Fixture {
                method: s(r, "method"),
                path: s(r, "path"),
                query: s(r, "query"),
                headers,
                body: base64::engine::general_purpose::STANDARD.decode(s(r, "body_b64")).unwrap(),
                service: s(r, "service"),
                canonical_request: s(r, "canonical_request"),
                string_to_sign: s(r, "string_to_sign"),
                authorization: s(r, "authorization"),
            }
        })
        .collect();
    (keys, list)
}

fn parts(f: &Fixture) -> RequestParts<'_> {
    RequestParts { method: &f.method, path: &f.path, query: &f.query, headers: &f.headers }
}

fn now_of(f: &Fixture) -> OffsetDateTime {
    parse_amz_date(f.headers.get(HEADER_DATE).unwrap().to_str().unwrap()).unwrap()
}

fn expected(f: &Fixture) -> Expected<'_> {
    Expected { region: "us-east-1", service: &f.service }
}

#[test]
fn canonical_requests_and_signatures_match_botocore() {
    let (keys, list) = fixtures();
    assert!(list.len() >= 30);
    for f in &list {
        let p = parts(f);
        let signed = parse(&p).unwrap();
        let payload = match f.headers.get(HEADER_CONTENT_SHA256) {
            Some(v) => v.to_str().unwrap().to_string(),
            None => hex(&Sha256::digest(&f.body)),
        };
        let cr = canonical_request(&p, &signed.signed_headers, &payload, false);
        assert_eq!(cr, f.canonical_request, "{} {}?{}", f.method, f.path, f.query);
        let sts = string_to_sign(&signed.amz_date, &signed.scope(), &cr);
        assert_eq!(sts, f.string_to_sign);
        let key = keys.get(&signed.access_key_id).unwrap();
        let sig = signature(&signing_key(&key.secret_access_key, &signed.scope_date, "us-east-1", &f.service), &sts);
        assert!(f.authorization.ends_with(&format!("Signature={sig}")), "{} {}", f.method, f.path);
        let who = verify(&keys, &p, &f.body, expected(f), now_of(f)).unwrap();
        assert_eq!(who.account_id, "111111111111");
        assert_eq!(who.key_name, "test");
    }
}

#[test]
fn a_tampered_request_fails_with_invalid_signature() {
    let (keys, list) = fixtures();
    let mut tampered = 0;
    for f in &list {
        let now = now_of(f);
        let unsigned = f.headers.get(HEADER_CONTENT_SHA256).is_some();
        if !unsigned {
            let mut body = f.body.clone();
            body.push(b' ');
            let e = verify(&keys, &parts(f), &body, expected(f), now).unwrap_err();
            assert_eq!(e, AuthError::bad_signature());
            tampered += 1;
        }
        // A signed header changed in flight.
        let mut headers = f.headers.clone();
        headers.insert(HEADER_DATE, f.headers[HEADER_DATE].clone());
        headers.insert(http::header::HOST, http::HeaderValue::from_static("evil.example:9000"));
        let p = RequestParts { headers: &headers, ..parts(f) };
        assert_eq!(verify(&keys, &p, &f.body, expected(f), now).unwrap_err(), AuthError::bad_signature());
        // Another method, another path.
        let p = RequestParts { method: if f.method == "GET" { "DELETE" } else { "GET" }, ..parts(f) };
        assert_eq!(verify(&keys, &p, &f.body, expected(f), now).unwrap_err(), AuthError::bad_signature());
        let path = format!("{}x", f.path);
        let p = RequestParts { path: &path, ..parts(f) };
        assert_eq!(verify(&keys, &p, &f.body, expected(f), now).unwrap_err(), AuthError::bad_signature());
        let query = if f.query.is_empty() { "Qualifier=1".to_string() } else { format!("{}&Qualifier=1", f.query) };
        let p = RequestParts { query: &query, ..parts(f) };
        assert_eq!(verify(&keys, &p, &f.body, expected(f), now).unwrap_err(), AuthError::bad_signature());
    }
    assert!(tampered > 10);
}

#[test]
fn wrong_secret_unknown_key_and_time_window() {
    let (_, list) = fixtures();
    let f = &list[0];
    let now = now_of(f);
    let other = Keys::parse(
        "[test]\naws_access_key_id = AKIAKILNTEST0001\naws_secret_access_key = wrong\naccount_id = 111111111111\n",
    )
    .unwrap();
    assert_eq!(verify(&other, &parts(f), &f.body, expected(f), now).unwrap_err(), AuthError::bad_signature());
    let stranger =
        Keys::parse("[x]\naws_access_key_id = AKIASOMEONEELSE\naws_secret_access_key = s\naccount_id = 111111111111\n")
            .unwrap();
    let e = verify(&stranger, &parts(f), &f.body, expected(f), now).unwrap_err();
    assert_eq!((e.code(), e.to_string().as_str()), ("UnrecognizedClientException", UNKNOWN_KEY));
    let (keys, _) = fixtures();
    let late = now + time::Duration::seconds(MAX_SKEW_SECS + 1);
    let e = verify(&keys, &parts(f), &f.body, expected(f), late).unwrap_err();
    assert_eq!(e.code(), "InvalidSignatureException");
    let date = f.headers[HEADER_DATE].to_str().unwrap();
    assert_eq!(
        e.to_string(),
        format!(
            "Signature expired: {date} is now earlier than {} ({} - 5 min.)",
            amz_date(late - time::Duration::minutes(5)),
            amz_date(late)
        )
    );
    let early = now - time::Duration::seconds(MAX_SKEW_SECS + 1);
    let e = verify(&keys, &parts(f), &f.body, expected(f), early).unwrap_err();
    assert!(e.to_string().starts_with("Signature not yet current:"), "{e}");
    // Within the window either way it passes.
    for s in [-MAX_SKEW_SECS + 1, MAX_SKEW_SECS - 1] {
        verify(&keys, &parts(f), &f.body, expected(f), now + time::Duration::seconds(s)).unwrap();
    }
    // The wrong region or service.
    let e = verify(&keys, &parts(f), &f.body, Expected { region: "eu-west-1", service: &f.service }, now).unwrap_err();
    assert!(e.to_string().contains("valid region"), "{e}");
    let e = verify(&keys, &parts(f), &f.body, Expected { region: "us-east-1", service: "s3" }, now).unwrap_err();
    assert!(e.to_string().contains("correct service: 's3'"), "{e}");
}

#[test]
fn missing_and_malformed_signatures() {
    let (keys, list) = fixtures();
    let f = &list[0];
    let now = now_of(f);
    let mut headers = f.headers.clone();
    headers.remove(http::header::AUTHORIZATION);
    let p = RequestParts { headers: &headers, ..parts(f) };
    let e = verify(&keys, &p, &f.body, expected(f), now).unwrap_err();
    assert_eq!((e.code(), e.to_string().as_str()), ("MissingAuthenticationTokenException", MISSING_TOKEN));
    let cases: &[(&str, &str)] = &[
        ("AWS4-HMAC-SHA256 Credential=AKIAKILNTEST0001/20261130/us-east-1/lambda/aws4_request", "requires 'Signature'"),
        ("Bearer abc", "Unsupported Authorization Type: 'Bearer'"),
        ("AWS4-HMAC-SHA256 Credential=A/B, SignedHeaders=host, Signature=00", "five slash-delimited"),
        ("AWS4-HMAC-SHA256 Credential=AKIAKILNTEST0001/20261130/us-east-1/lambda/aws4_request, SignedHeaders=x-amz-date, Signature=00", "'Host'"),
        ("AWS4-HMAC-SHA256 Credential=AKIAKILNTEST0001/20261130/us-east-1/lambda/aws4_request, SignedHeaders=x-amz-date;host, Signature=00", "sorted"),
        ("AWS4-HMAC-SHA256 Credential=AKIAKILNTEST0001/20261130/us-east-1/lambda/aws4_request, SignedHeaders=host, Signature=zz", "64 hexadecimal"),
        ("AWS4-HMAC-SHA256 garbage", "missing equal-sign"),
    ];
    for (auth, needle) in cases {
        headers.insert(http::header::AUTHORIZATION, http::HeaderValue::from_str(auth).unwrap());
        let p = RequestParts { headers: &headers, ..parts(f) };
        let e = verify(&keys, &p, &f.body, expected(f), now).unwrap_err();
        assert_eq!(e.code(), "IncompleteSignatureException", "{auth}: {e}");
        assert!(e.to_string().contains(needle), "{auth}: {e}");
    }
    // An enormous header is refused without being parsed.
    let huge = format!("AWS4-HMAC-SHA256 Credential={}", "A".repeat(MAX_AUTHORIZATION_BYTES));
    headers.insert(http::header::AUTHORIZATION, http::HeaderValue::from_str(&huge).unwrap());
    let p = RequestParts { headers: &headers, ..parts(f) };
    assert_eq!(verify(&keys, &p, &f.body, expected(f), now).unwrap_err().code(), "IncompleteSignatureException");
    // No date header.
    let mut headers = f.headers.clone();
    headers.remove(HEADER_DATE);
    let p = RequestParts { headers: &headers, ..parts(f) };
    let e = verify(&keys, &p, &f.body, expected(f), now).unwrap_err();
    assert!(e.to_string().contains("'X-Amz-Date' or a 'Date' header"), "{e}");
}

#[test]
fn a_claimed_body_hash_must_match_the_body() {
    let keys = Keys::parse("[k]\naws_access_key_id = AKIA1\naws_secret_access_key = sec\naccount_id = 123456789012\n")
        .unwrap();
    let now = OffsetDateTime::now_utc();
    let date = amz_date(now);
    let body = b"{\"a\":1}";
    let hash = hex(&Sha256::digest(body));
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::HOST, http::HeaderValue::from_static("localhost"));
    headers.insert(HEADER_DATE, http::HeaderValue::from_str(&date).unwrap());
    headers.insert(HEADER_CONTENT_SHA256, http::HeaderValue::from_str(&hash).unwrap());
    let exp = Expected { region: "us-east-1", service: "lambda" };
    let p = RequestParts { method: "POST", path: "/2015-03-31/functions", query: "", headers: &headers };
    let auth = authorization(&p, "AKIA1", "sec", &date, exp, &hash);
    headers.insert(http::header::AUTHORIZATION, http::HeaderValue::from_str(&auth).unwrap());
    let p = RequestParts { method: "POST", path: "/2015-03-31/functions", query: "", headers: &headers };
    assert_eq!(verify(&keys, &p, body, exp, now).unwrap().account_id, "123456789012");
    let e = verify(&keys, &p, b"{\"a\":2}", exp, now).unwrap_err();
    assert_eq!(e.code(), "InvalidSignatureException");
    assert!(e.to_string().contains("x-amz-content-sha256"), "{e}");
}

#[test]
fn presigned_urls_verify_and_expire() {
    let keys = Keys::parse("[k]\naws_access_key_id = AKIA1\naws_secret_access_key = sec\naccount_id = 123456789012\n")
        .unwrap();
    let now = OffsetDateTime::now_utc();
    let date = amz_date(now);
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::HOST, http::HeaderValue::from_static("localhost:9000"));
    let base = format!(
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA1%2F{}%2Fus-east-1%2Flambda%2Faws4_request&X-Amz-Date={date}&X-Amz-Expires=60&X-Amz-SignedHeaders=host",
        &date[..8]
    );
    let p = RequestParts { method: "GET", path: "/2015-03-31/functions/", query: &base, headers: &headers };
    let exp = Expected { region: "us-east-1", service: "lambda" };
    let cr = canonical_request(&p, &["host".to_string()], UNSIGNED_PAYLOAD, true);
    let scope = format!("{}/us-east-1/lambda/aws4_request", &date[..8]);
    let sig = signature(&signing_key("sec", &date[..8], "us-east-1", "lambda"), &string_to_sign(&date, &scope, &cr));
    let query = format!("{base}&X-Amz-Signature={sig}");
    let p = RequestParts { query: &query, ..p };
    assert_eq!(verify(&keys, &p, b"", exp, now).unwrap().access_key_id, "AKIA1");
    let e = verify(&keys, &p, b"", exp, now + time::Duration::seconds(61)).unwrap_err();
    assert!(e.to_string().starts_with("Signature expired:"), "{e}");
    let bad = query.replace("X-Amz-Expires=60", "X-Amz-Expires=600");
    let p = RequestParts { query: &bad, ..p };
    assert_eq!(verify(&keys, &p, b"", exp, now).unwrap_err(), AuthError::bad_signature());
}

#[test]
fn canonical_path_removes_dot_segments_and_encodes_again() {
    assert_eq!(canonical_path(""), "/");
    assert_eq!(canonical_path("/"), "/");
    assert_eq!(canonical_path("//a/./b/../c//"), "/a/c/");
    assert_eq!(canonical_path("/a%3Ab c"), "/a%253Ab%20c");
    assert_eq!(canonical_path("/../.."), "/");
    assert_eq!(canonical_query("b=2&a=1&a=0&X-Amz-Signature=x", true), "a=0&a=1&b=2");
    assert_eq!(canonical_query("k=a%2fb&sp=a+b&e", false), "e=&k=a%2Fb&sp=a%2Bb");
}

/// xorshift64*: a small seeded generator, so the property test is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }

    /// Bytes of any value but `0xff` (the fuzz input's separator) and, when `line`, `\n`.
    fn bytes(&mut self, max: usize, line: bool) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n).map(|_| self.next() as u8).filter(|b| *b != 0xff && !(line && *b == b'\n')).collect()
    }
}

/// A fuzz input with the shape `fuzz_canonical` reads, from pieces that hit the canonical
/// request's edges: dot segments, repeated slashes, `%` escapes (good, broken, encoded
/// twice), non-ASCII, repeated and unsorted query keys, headers repeated, folded, in odd case.
fn generated(rng: &mut Rng) -> Vec<u8> {
    if rng.below(8) == 0 {
        return rng.bytes(200, false);
    }
    const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "HEAD", "get", "PATCH", ""];
    const SEGMENTS: &[&str] = &[
        "",
        ".",
        "..",
        "2015-03-31",
        "functions",
        "f",
        "%2F",
        "%252F",
        "%",
        "%z",
        "a b",
        "é",
        "arn%3Aaws%3Alambda",
        "~",
        "+",
        "$LATEST",
        "%24LATEST",
        "a;b",
        "a=b",
    ];
    const PAIRS: &[&str] = &[
        "a=1",
        "a=0",
        "a",
        "=",
        "b=%20",
        "b=+",
        "Qualifier=%24LATEST",
        "Qualifier=$LATEST",
        "X-Amz-Signature=x",
        "X-Amz-Algorithm=AWS4-HMAC-SHA256",
        "k=a%2fb",
        "k=%",
        "%41=1",
        "é=è",
        "",
    ];
    const NAMES: &[&str] = &[
        "host",
        "Host",
        "x-amz-date",
        "content-type",
        "x-a",
        "X-B",
        "x-amz-content-sha256",
        "authorization",
        "x-amz-security-token",
        "bad name",
        "",
    ];
    const VALUES: &[&str] = &[
        "localhost:9000",
        "a  b",
        "\ta b\t",
        "x,y",
        "",
        "application/json",
        "UNSIGNED-PAYLOAD",
        "AWS4-HMAC-SHA256 Credential=AKIAFUZZ/20241003/us-east-1/lambda/aws4_request, SignedHeaders=host, Signature=00",
    ];
    let mut out = Vec::new();
    out.extend_from_slice(rng.pick(METHODS).as_bytes());
    out.push(0xff);
    for _ in 0..rng.below(6) {
        out.push(b'/');
        if rng.below(2) == 0 {
            out.push(b'/');
        }
        out.extend_from_slice(rng.pick(SEGMENTS).as_bytes());
    }
    out.push(0xff);
    for i in 0..rng.below(5) {
        if i > 0 {
            out.push(b'&');
        }
        out.extend_from_slice(rng.pick(PAIRS).as_bytes());
    }
    out.push(0xff);
    for _ in 0..rng.below(6) {
        out.extend_from_slice(rng.pick(NAMES).as_bytes());
        out.push(b':');
        if rng.below(4) == 0 {
            out.extend(rng.bytes(12, true));
        } else {
            out.extend_from_slice(rng.pick(VALUES).as_bytes());
        }
        out.push(b'\n');
    }
    out.push(0xff);
    out.extend(rng.bytes(64, false));
    out
}

#[test]
fn the_fuzz_target_holds_on_generated_requests() {
    let mut rng = Rng(0x6b69_6c6e_5369_6756);
    for _ in 0..4000 {
        let input = generated(&mut rng);
        fuzz_canonical(&input);
    }
    // The seeds in fuzz/seeds/sigv4_canonical too.
    let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/sigv4_canonical");
    let mut n = 0;
    for entry in std::fs::read_dir(&seeds).unwrap() {
        fuzz_canonical(&std::fs::read(entry.unwrap().path()).unwrap());
        n += 1;
    }
    assert!(n > 0, "no seeds in {}", seeds.display());
}
