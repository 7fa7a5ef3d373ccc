//! Request heads: any bytes give a head, "incomplete", or a 4xx/5xx error — never a panic — and a
//! parsed head consumed no more than it was given and has a path without `..` segments.
#![no_main]
#![allow(dead_code)]

#[path = "../../src/http/mod.rs"]
mod http;

use http::request::{HeadLimits, parse_request_head};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = HeadLimits {
        max_request_line: 8192,
        max_head_bytes: 16384,
        max_headers: 100,
    };
    match parse_request_head(data, &limits) {
        Ok(Some((head, used))) => {
            assert!(used <= data.len(), "consumed {used} of {}", data.len());
            assert!(
                !head.path.split('/').any(|s| s == ".." || s == "."),
                "a dot segment passed: {:?}",
                head.path
            );
            assert!(
                !head.path.contains('\\'),
                "a backslash passed: {:?}",
                head.path
            );
        }
        Ok(None) => {}
        Err(e) => assert!((400..600).contains(&e.status), "status {}", e.status),
    }
});
