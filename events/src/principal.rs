//! Who caused an event, by kind: a user, the bootstrap administrator, an endpoint, a machine
//! presenting a key, a gateway node, a scanner credential. The kind is part of the record, so no
//! user name can pose as another kind (a user called `admin`, `node-1` or `endpoint:dc1` is still
//! a user); older events, from before principals were typed, keep their plain text.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Principal {
    /// A user of the management API, by name.
    User { name: String },
    /// The node's bootstrap administrator token.
    BootstrapAdmin,
    /// An endpoint agent, on its admitted session.
    Endpoint { name: String },
    /// A machine presenting an endpoint key, before it is admitted (its identity's prefix).
    Machine { id: String },
    /// A gateway node acting on its own (recovery, expiry, activation).
    Node { id: String },
    /// A scanner, by its credential's id (never its secret).
    Credential { id: String },
}

impl Principal {
    pub fn user(name: impl Into<String>) -> Self {
        Principal::User { name: name.into() }
    }

    pub fn node(id: impl Into<String>) -> Self {
        Principal::Node { id: id.into() }
    }

    /// The name within its kind (`alice` for user `alice`), what `ism audit --actor` matches
    /// besides the whole display form.
    pub fn name(&self) -> &str {
        match self {
            Principal::User { name } | Principal::Endpoint { name } => name,
            Principal::BootstrapAdmin => "admin",
            Principal::Machine { id } | Principal::Node { id } | Principal::Credential { id } => id,
        }
    }
}

/// `kind:name`, as the audit shows it: `user:alice`, `admin` (the bootstrap administrator),
/// `endpoint:dc1`, `machine:3f2a...`, `node:node-a`, `credential:7c1e...`.
impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::User { name } => write!(f, "user:{name}"),
            Principal::BootstrapAdmin => write!(f, "admin"),
            Principal::Endpoint { name } => write!(f, "endpoint:{name}"),
            Principal::Machine { id } => write!(f, "machine:{id}"),
            Principal::Node { id } => write!(f, "node:{id}"),
            Principal::Credential { id } => write!(f, "credential:{id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_named_like_another_kind_stays_a_user() {
        for name in ["admin", "endpoint:dc1", "node-1", "credential:abc"] {
            let user = Principal::user(name);
            assert_eq!(user.to_string(), format!("user:{name}"));
            assert_ne!(user.to_string(), Principal::BootstrapAdmin.to_string());
            assert_ne!(user.to_string(), Principal::Endpoint { name: "dc1".into() }.to_string());
            assert_ne!(user.to_string(), Principal::node("node-1").to_string());
        }
    }

    #[test]
    fn the_kind_is_stored_with_the_name() {
        let stored = rmp_serde::to_vec_named(&Principal::node("node-a")).unwrap();
        let back: Principal = rmp_serde::from_slice(&stored).unwrap();
        assert_eq!(back, Principal::node("node-a"));
        let user: Principal =
            rmp_serde::from_slice(&rmp_serde::to_vec_named(&Principal::user("node-a")).unwrap())
                .unwrap();
        assert_ne!(user, back);
    }
}
