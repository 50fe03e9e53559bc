//! Any bytes a scanner sends to the HTTP proxy port: parsing the head, deciding where it goes and
//! reading its credentials never panic.
#![no_main]
use ism_ingress_proto::http_proxy::{destination, parse_head, Parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Parse::Done(head, n)) = parse_head(data) {
        assert!(n <= data.len());
        let _ = destination(&head);
        let _ = head.proxy_credentials();
    }
});
