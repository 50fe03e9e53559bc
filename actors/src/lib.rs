//! The actors: each gateway, endpoint and tunnel is an aggregate hosted by an actix actor.
//!
//! One file per actor holds its commands, the events it emits, its rules and its given/when/then
//! tests: [`gateway`], [`endpoint`], [`tunnel`], [`user`], [`webhook`], [`notification`] (one
//! notice and the claim that makes a single node of a cluster send it), [`scan`] (one run of the
//! built-in scan engine). [`aggregate`] is the write path they
//! share (decide, append with the expected version, apply; reload and retry on a conflict),
//! [`host`] the actix actor around it and the node-local directory of actors. [`roster`] adds,
//! renames and deletes endpoints across the gateway's roster and the endpoint, undoing half-done
//! work. [`credentials`] and [`text`] hold the rules for keys, secrets and user-entered names.
#![forbid(unsafe_code)]

pub mod aggregate;
pub mod credentials;
pub mod endpoint;
pub mod gateway;
pub mod host;
pub mod notification;
pub mod roster;
pub mod scan;
pub mod text;
pub mod tunnel;
pub mod user;
pub mod webhook;

pub use aggregate::{Aggregate, CommandError, Executed};
pub use host::NodeActors;
