//! The handshake's rules, shared by both sides: which frame each side expects in turn, what the
//! endpoint signs, when the gateway refuses and with which words, and which refusals the endpoint
//! retries.
//!
//! Four frames on a fresh WebSocket: the gateway sends `Challenge`, the endpoint answers `Hello`
//! (its key, its machine identity, a signature over the challenge), the gateway replies
//! `Welcome` or `Rejected`. The checks that need the event log (is the key valid, is it bound to
//! another machine) are the gateway's and the endpoint actor's; their outcome is one of the
//! [`Rejection`]s here.

use crate::frame::{Frame, Hello, RejectCode, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};

/// What the endpoint signs with its machine key to answer a `Challenge`: a fixed context string,
/// the nonce and the node name, so a signature is useless for any other purpose or node.
pub fn challenge_message(nonce: &[u8; 32], node: &str) -> Vec<u8> {
    let mut m = b"ism-tunnel-challenge-v1\0".to_vec();
    m.extend_from_slice(nonce);
    m.extend_from_slice(node.as_bytes());
    m
}

/// The gateway refuses a session: the code decides what the endpoint does next, the message is
/// what its operator reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: RejectCode,
    pub message: String,
}

impl Rejection {
    pub fn unsupported_version(endpoint_version: u16) -> Self {
        Self {
            code: RejectCode::UnsupportedVersion,
            message: format!(
                "this gateway speaks tunnel protocols {MIN_PROTOCOL_VERSION} to \
                 {PROTOCOL_VERSION}, the endpoint {endpoint_version}; update the endpoint"
            ),
        }
    }

    pub fn bad_signature() -> Self {
        Self {
            code: RejectCode::BadHandshake,
            message: "the machine identity signature does not verify".into(),
        }
    }

    pub fn invalid_key() -> Self {
        Self {
            code: RejectCode::InvalidKey,
            message: "Invalid endpoint key: copy the key again from the gateway page (Copy \
                      Endpoint Key)"
                .into(),
        }
    }

    /// The key is the current key of an endpoint that was deleted (told only to a holder of that
    /// key, so that its agent stops with the right words).
    pub fn endpoint_deleted() -> Self {
        Self {
            code: RejectCode::EndpointDeleted,
            message: "this endpoint was deleted from its gateway: its key no longer works".into(),
        }
    }

    /// The key is bound to another machine; `reason` is the endpoint actor's words for it (the
    /// seed's "Token already registered"), which endpoints print and scripts may match.
    pub fn token_already_registered(reason: impl Into<String>) -> Self {
        Self { code: RejectCode::TokenAlreadyRegistered, message: reason.into() }
    }

    /// Another live agent with the same machine identity, on host `holder` (the host name it
    /// gave, untrusted: quoted and escaped here), holds the endpoint's session.
    pub fn machine_key_copied(holder: &str) -> Self {
        Self {
            code: RejectCode::MachineKeyCopied,
            message: format!(
                "another running endpoint with this machine identity, on host {holder:?}, holds \
                 this endpoint's session: its machine key (data/machine.key) was copied to \
                 another host, or a second endpoint runs on this one"
            ),
        }
    }

    /// A transient failure on the gateway's side (its event log, say): the endpoint retries.
    pub fn unavailable(cause: impl std::fmt::Display) -> Self {
        Self { code: RejectCode::Unavailable, message: cause.to_string() }
    }

    /// Whether the endpoint should try again later rather than stop and wait for its operator.
    pub fn is_retryable(&self) -> bool {
        self.code.is_retryable()
    }

    pub fn frame(&self) -> Frame {
        Frame::Rejected { code: self.code, message: self.message.clone() }
    }
}

/// A frame other than the one the handshake expects at this point.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected} during the tunnel handshake, got another frame")]
pub struct OutOfOrder {
    pub expected: &'static str,
}

/// The gateway's first frame, as the endpoint reads it: the nonce, the node, and the version
/// the endpoint answers with (the lower of the gateway's and its own, which an older gateway
/// still speaks).
pub fn expect_challenge(frame: Frame) -> Result<([u8; 32], String, u16), OutOfOrder> {
    match frame {
        Frame::Challenge { nonce, node, version } => {
            Ok((nonce, node, version.min(PROTOCOL_VERSION)))
        }
        _ => Err(OutOfOrder { expected: "Challenge" }),
    }
}

/// The endpoint's answer, as the gateway reads it: a `Hello` of a protocol version this gateway
/// speaks (the session runs at that version).
pub fn expect_hello(frame: Frame) -> Result<Result<Hello, Rejection>, OutOfOrder> {
    match frame {
        Frame::Hello(h) if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&h.version) => {
            Ok(Err(Rejection::unsupported_version(h.version)))
        }
        Frame::Hello(h) => Ok(Ok(*h)),
        _ => Err(OutOfOrder { expected: "Hello" }),
    }
}

/// The session the gateway admitted, as the endpoint learns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcomed {
    pub node: String,
    pub endpoint_name: String,
}

/// The gateway's verdict, as the endpoint reads it.
pub fn expect_verdict(frame: Frame) -> Result<Result<Welcomed, Rejection>, OutOfOrder> {
    match frame {
        Frame::Welcome { node, endpoint_name, .. } => Ok(Ok(Welcomed { node, endpoint_name })),
        Frame::Rejected { code, message } => Ok(Err(Rejection { code, message })),
        _ => Err(OutOfOrder { expected: "Welcome or Rejected" }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Purpose;

    fn hello(version: u16) -> Frame {
        Frame::Hello(Box::new(Hello {
            version,
            purpose: Purpose::Serve,
            key: "k".into(),
            machine_key: [1; 32],
            signature: [2; 64],
            agent_version: "0".into(),
            platform: "linux".into(),
            hostname: "h".into(),
            instance: None,
        }))
    }

    #[test]
    fn each_side_expects_the_frames_in_order() {
        let challenge =
            Frame::Challenge { version: PROTOCOL_VERSION, nonce: [3; 32], node: "n".into() };
        assert_eq!(expect_challenge(challenge), Ok(([3; 32], "n".to_string(), PROTOCOL_VERSION)));
        assert!(expect_challenge(hello(PROTOCOL_VERSION)).is_err());
        assert!(matches!(expect_hello(hello(PROTOCOL_VERSION)), Ok(Ok(_))));
        assert!(expect_hello(Frame::Ping { nonce: 1 }).is_err());
        assert!(expect_verdict(hello(PROTOCOL_VERSION)).is_err());
        let welcome =
            Frame::Welcome { session: [0; 16], node: "n".into(), endpoint_name: "dc1".into() };
        assert_eq!(
            expect_verdict(welcome),
            Ok(Ok(Welcomed { node: "n".into(), endpoint_name: "dc1".into() }))
        );
    }

    #[test]
    fn a_version_outside_the_range_spoken_is_refused_for_good() {
        for version in [MIN_PROTOCOL_VERSION - 1, PROTOCOL_VERSION + 1] {
            let refused = expect_hello(hello(version)).unwrap().unwrap_err();
            assert_eq!(refused.code, RejectCode::UnsupportedVersion);
            assert!(!refused.is_retryable());
        }
    }

    #[test]
    fn builds_of_different_versions_meet_at_the_lower_one() {
        // An endpoint of this build and a gateway still at version 1: it answers at 1.
        let old_gateway = Frame::Challenge { version: 1, nonce: [3; 32], node: "n".into() };
        assert_eq!(expect_challenge(old_gateway).unwrap().2, 1);
        // A newer gateway: the endpoint answers at its own version.
        let new_gateway =
            Frame::Challenge { version: PROTOCOL_VERSION + 5, nonce: [3; 32], node: "n".into() };
        assert_eq!(expect_challenge(new_gateway).unwrap().2, PROTOCOL_VERSION);
        // An endpoint still at version 1 is admitted by this gateway.
        assert!(matches!(expect_hello(hello(1)), Ok(Ok(h)) if h.version == 1));
    }

    #[test]
    fn the_other_hosts_name_reaches_the_message_escaped() {
        let refused = Rejection::machine_key_copied("evil\nERROR - forged\x1b[31m");
        assert!(!refused.message.contains(['\n', '\x1b']), "{}", refused.message);
        assert!(refused.message.contains("machine.key") && refused.message.contains("copied"));
    }

    #[test]
    fn only_a_gateway_side_failure_is_retried() {
        for r in [
            Rejection::bad_signature(),
            Rejection::invalid_key(),
            Rejection::endpoint_deleted(),
            Rejection::token_already_registered("Token already registered"),
            Rejection::machine_key_copied("other-host"),
        ] {
            assert!(!r.is_retryable(), "{r:?}");
        }
        assert!(Rejection::unavailable("log down").is_retryable());
        let refused = Rejection::token_already_registered("Token already registered");
        let back = expect_verdict(refused.frame()).unwrap();
        assert_eq!(back, Err(refused), "what the gateway sends is what the endpoint reads");
    }
}
