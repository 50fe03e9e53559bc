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

/// Just the catalogue version of an encoded envelope: read before the rest, because an event
/// from a newer catalogue may not decode at all here (an unknown variant).
#[derive(serde::Deserialize)]
struct SchemaOnly {
    schema: u16,
}

/// Decodes an envelope of this or an older schema version.
pub fn decode(bytes: &[u8]) -> Result<Envelope, CodecError> {
    let SchemaOnly { schema } = rmp_serde::from_slice(bytes)?;
    if schema > SCHEMA_VERSION {
        return Err(CodecError::FromTheFuture { found: schema });
    }
    // Versions 1 and 2 differ only by an added event: nothing to upcast yet.
    Ok(rmp_serde::from_slice(bytes)?)
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
            Cause {
                causation: Some(Uuid::new_v4()),
                trace: Some("00-abc-def-01".into()),
                principal: Some(crate::Principal::user("alice")),
            },
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
        let mut e = Envelope::new(
            AggregateId::gateway(Uuid::new_v4()),
            1,
            0,
            Cause::default(),
            Event::GatewayActivated { node: "n".into() },
        );
        e.schema = SCHEMA_VERSION + 1;
        let err = decode(&encode(&e).unwrap()).unwrap_err();
        assert!(err.to_string().contains("upgrade this node"), "{err}");
    }

    /// What a node of a newer build may write: an event this build has never heard of.
    #[test]
    fn an_unknown_event_from_a_newer_catalogue_asks_for_an_upgrade() {
        #[derive(serde::Serialize)]
        struct Future {
            id: Uuid,
            aggregate: AggregateId,
            sequence: u64,
            time_ms: i64,
            schema: u16,
            event: std::collections::BTreeMap<&'static str, u8>,
        }
        let future = Future {
            id: Uuid::new_v4(),
            aggregate: AggregateId::tunnel(Uuid::new_v4()),
            sequence: 1,
            time_ms: 0,
            schema: SCHEMA_VERSION + 1,
            event: [("StreamTeleported", 1)].into(),
        };
        let err = decode(&rmp_serde::to_vec_named(&future).unwrap()).unwrap_err();
        assert!(matches!(err, CodecError::FromTheFuture { .. }), "{err}");
    }

    /// Events keep the catalogue version that introduced them, so older nodes still read them.
    #[test]
    fn each_envelope_carries_the_version_that_introduced_its_event() {
        let old = Envelope::new(
            AggregateId::tunnel(Uuid::new_v4()),
            1,
            0,
            Cause::default(),
            Event::TunnelClosed { reason: "r".into() },
        );
        assert_eq!(old.schema, 1);
        let counted = crate::RepeatedRefusals {
            scanner: "s".into(),
            reason: "busy".into(),
            count: 3,
            targets: vec!["a:1".into()],
            other_targets: 0,
            first_ms: 1,
            last_ms: 2,
        };
        let repeated = Event::StreamRefusalsRepeated(counted);
        let new =
            Envelope::new(AggregateId::tunnel(Uuid::new_v4()), 2, 0, Cause::default(), repeated);
        assert_eq!(new.schema, 2);
        assert_eq!(decode(&encode(&new).unwrap()).unwrap(), new);
        let unbound = Event::EndpointUnbound { machine: "m".into() };
        let newer =
            Envelope::new(AggregateId::endpoint(Uuid::new_v4()), 3, 0, Cause::default(), unbound);
        assert_eq!(newer.schema, 3);
        assert_eq!(decode(&encode(&newer).unwrap()).unwrap(), newer);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode(b"\xc1\x00garbage").is_err());
        assert!(decode(b"").is_err());
    }
}
