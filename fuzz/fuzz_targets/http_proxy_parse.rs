//! Any bytes a scanner sends to the HTTP proxy port: parsing the head, deciding where it goes,
//! reading its credentials and finding where a forwarded request's body ends never panic; an
//! accepted target never holds a control character, and a body never claims bytes it was not
//! given.
#![no_main]
use ism_ingress_proto::http_proxy::{destination, parse_head, Destination, Parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Parse::Done(head, n)) = parse_head(data) {
        assert!(n <= data.len());
        let _ = head.proxy_credentials();
        match destination(&head) {
            Ok(Destination::Tunnel(target)) => {
                assert!(target.to_string().bytes().all(|b| b.is_ascii_graphic()));
            }
            Ok(Destination::Forward { target, mut body, .. }) => {
                assert!(target.to_string().bytes().all(|b| b.is_ascii_graphic()));
                let rest = &data[n..];
                if let Ok(used) = body.feed(rest) {
                    assert!(used <= rest.len());
                    assert!(used == rest.len() || body.is_done());
                }
            }
            Err(_) => {}
        }
    }
});
