//! A Lambda custom runtime with nothing in it: one thread, one kept-alive connection, blocking
//! I/O, HTTP/1.1 written and read by hand.
//!
//! It is not a runtime to build functions on (use `lambda_runtime`, see `examples/hello-rust`).
//! It exists for `kiln bench`: the official client spends ~170 µs of CPU on each event, more than
//! a loopback round trip, so with it the bench mostly measures the client. With this one, what is
//! left is kiln. It echoes the event, or with `{"action": "sleep", "ms": N}` sleeps first (the
//! burst and density scenarios need that).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let api = std::env::var("AWS_LAMBDA_RUNTIME_API")?;
    let stream = TcpStream::connect(&api)?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let next = format!("GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: {api}\r\n\r\n");
    loop {
        writer.write_all(next.as_bytes())?;
        let (request_id, event) = read_response(&mut reader)?;
        let request_id = request_id.ok_or("the event has no Lambda-Runtime-Aws-Request-Id")?;
        let answer = handle(event);
        let mut post = format!(
            "POST /2018-06-01/runtime/invocation/{request_id}/response HTTP/1.1\r\nHost: {api}\r\nContent-Length: {}\r\n\r\n",
            answer.len()
        )
        .into_bytes();
        post.extend_from_slice(&answer);
        writer.write_all(&post)?;
        read_response(&mut reader)?;
    }
}

fn handle(event: Vec<u8>) -> Vec<u8> {
    let parsed: serde_json::Value = serde_json::from_slice(&event).unwrap_or_default();
    if parsed["action"] == "sleep" {
        let ms = parsed["ms"].as_u64().unwrap_or(0);
        std::thread::sleep(Duration::from_millis(ms));
        return format!("{{\"slept_ms\":{ms}}}").into_bytes();
    }
    event
}

/// Reads one response: its request id header, if any, and its body (`Content-Length` framed, as
/// the Runtime API sends it).
fn read_response(reader: &mut impl BufRead) -> Result<(Option<String>, Vec<u8>), Error> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if !line.starts_with("HTTP/1.1 2") {
        return Err(format!("the runtime api answered {}", line.trim_end()).into());
    }
    let (mut request_id, mut length) = (None, 0usize);
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err("the runtime api closed the connection".into());
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse()?;
            } else if name.eq_ignore_ascii_case("lambda-runtime-aws-request-id") {
                request_id = Some(value.trim().to_owned());
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok((request_id, body))
}
