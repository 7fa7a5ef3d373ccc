//! Range and Content-Range headers: any text parses or is refused — never a panic — and ranges
//! resolved against a length lie inside it.
#![no_main]
#![allow(dead_code)]

#[path = "../../src/http/mod.rs"]
mod http;

use http::range::{parse_content_range, parse_range_header, resolve_ranges};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let len = u64::from_le_bytes(data[..8].try_into().unwrap_or([0; 8])) >> (data[0] % 64);
    let text = String::from_utf8_lossy(&data[8..]);
    if let Ok(specs) = parse_range_header(&text, 16) {
        assert!(specs.len() <= 16);
        if let Ok(spans) = resolve_ranges(&specs, len) {
            for s in spans {
                assert!(s.first <= s.last && s.last < len, "{s:?} outside {len}");
            }
        }
    }
    if let Ok(cr) = parse_content_range(&text) {
        assert!(cr.first <= cr.last);
        if let Some(n) = cr.complete_length {
            assert!(cr.last < n);
        }
    }
});
