//! Structure-aware companion of `unzip`: the input is decoded into a list of zip entries (files,
//! directories, symlinks, with names and link targets drawn mostly from `a`, `b`, `..`, `.`, ``),
//! written as a well-formed zip with `zip::ZipWriter`, and fed to the same checks as `unzip`.
//! Random bytes rarely get past the zip's CRCs; this reaches the name and link logic directly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::{Cursor, Write};
use zip::write::SimpleFileOptions;

const TOKENS: &[&str] = &["a", "b", "..", ".", "", "l", "c", "lib"];

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn path(&mut self) -> Option<String> {
        let head = self.byte()?;
        let mut s = String::new();
        if head & 0x80 != 0 {
            s.push('/');
        }
        for i in 0..(head & 0x07) {
            if i > 0 {
                s.push('/');
            }
            let t = self.byte()?;
            if t & 0xf0 == 0xf0 {
                // A raw component, now and then: 0–15 arbitrary bytes.
                let n = usize::from(t & 0x0f).min(self.0.len());
                let (raw, rest) = self.0.split_at(n);
                self.0 = rest;
                s.push_str(&String::from_utf8_lossy(raw));
            } else {
                s.push_str(TOKENS[usize::from(t) % TOKENS.len()]);
            }
        }
        Some(s)
    }
}

fn build(data: &[u8]) -> Option<Vec<u8>> {
    let mut input = Input(data);
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    while let Some(op) = input.byte() {
        let name = input.path()?;
        let mode = if op & 0x10 != 0 { 0o755 } else { 0o644 };
        let method = if op & 0x20 != 0 { zip::CompressionMethod::Deflated } else { zip::CompressionMethod::Stored };
        let opts = SimpleFileOptions::default().compression_method(method).unix_permissions(mode);
        match op % 3 {
            0 => {
                let len = usize::from(input.byte()? % 16).min(input.0.len());
                let (content, rest) = input.0.split_at(len);
                input.0 = rest;
                if w.start_file(name, opts).is_ok() {
                    w.write_all(content).ok()?;
                }
            }
            1 => {
                let _ = w.add_directory(name, opts);
            }
            _ => {
                let target = input.path()?;
                let _ = w.add_symlink(name, target, opts);
            }
        }
    }
    w.finish().ok().map(Cursor::into_inner)
}

fuzz_target!(|data: &[u8]| {
    if let Some(zip) = build(data) {
        kiln_fuzz::check_unzip(&zip);
    }
});
