//! MessagePack encoding of envelopes, and where upcasters for old schema versions go.

use crate::envelope::Envelope;
use crate::event::SCHEMA_VERSION;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("cannot encode event: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("cannot decode event: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error("event written with schema {found}, newer than this build's {SCHEMA_VERSION}: upgrade this node")]
    FromTheFuture { found: u16 },
}

/// Encodes with field names, so that added and reordered fields stay readable.
pub fn encode(envelope: &Envelope) -> Result<Vec<u8>, CodecError> {
    Ok(rmp_serde::to_vec_named(envelope)?)
}

/// Decodes an envelope of this or an older schema version.
pub fn decode(bytes: &[u8]) -> Result<Envelope, CodecError> {
    let envelope: Envelope = rmp_serde::from_slice(bytes)?;
    if envelope.schema > SCHEMA_VERSION {
        return Err(CodecError::FromTheFuture { found: envelope.schema });
    }
    // Schema 1 is the first: nothing to upcast yet.
    Ok(envelope)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{AggregateId, Cause};
    use crate::event::{Event, Platform};
    use uuid::Uuid;

    #[test]
    fn envelopes_roundtrip_with_all_fields() {
        let e = Envelope::new(
            AggregateId::endpoint(Uuid::new_v4()),
            3,
            1_700_000_000_000,
            Cause { causation: Some(Uuid::new_v4()), trace: Some("00-abc-def-01".into()), actor: Some("alice".into()) },
            Event::EndpointAdded {
                gateway: Uuid::new_v4(),
                name: "dc1".into(),
                description: "first".into(),
                platform: Platform::Linux,
                key_generation: 1,
                key_hash: "ab".repeat(32),
            },
        );
        assert_eq!(decode(&encode(&e).unwrap()).unwrap(), e);
    }

    #[test]
    fn a_newer_schema_is_refused_clearly() {
        let mut e = Envelope::new(AggregateId::gateway(Uuid::new_v4()), 1, 0, Cause::default(), Event::GatewayActivated { node: "n".into() });
        e.schema = SCHEMA_VERSION + 1;
        let err = decode(&encode(&e).unwrap()).unwrap_err();
        assert!(err.to_string().contains("upgrade this node"), "{err}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode(b"\xc1\x00garbage").is_err());
        assert!(decode(b"").is_err());
    }
}
