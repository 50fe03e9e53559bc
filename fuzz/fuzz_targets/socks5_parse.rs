//! Any bytes a scanner sends to the SOCKS5 port: the parsers never panic, never claim more
//! bytes than they were given, and never accept a target holding a control character.
#![no_main]
use ism_ingress_proto::socks5::{parse_auth, parse_greeting, parse_request, Parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Parse::Done(_, n)) = parse_greeting(data) {
        assert!(n <= data.len());
    }
    if let Ok(Parse::Done(_, n)) = parse_auth(data) {
        assert!(n <= data.len());
    }
    if let Ok(Parse::Done(request, n)) = parse_request(data) {
        assert!(n <= data.len());
        assert!(request.target.to_string().bytes().all(|b| b.is_ascii_graphic()));
    }
});
