//! A gateway node: where endpoints attach their tunnels and scanners attach to endpoints.
//!
//! - [`node`]: configuration and start-up (event log, directory, actors, listeners);
//! - [`tunnel_acceptor`]: TLS + WebSocket accept, the endpoint handshake, session lifecycle;
//!   [`tunnel_threads`]: the threads sessions live on, with their scanners' splices;
//! - [`sessions`]: the endpoint sessions this node holds, newest wins, unless
//!   [`copied_identity`] shows two live agents sharing one machine identity;
//! - [`socks5`] and [`http_proxy`]: the scanner ingresses (their protocols, without I/O, are the
//!   `ism-ingress-proto` crate), around [`scanner_stream`], the path they share;
//! - [`stream_queue`]: streams beyond an endpoint's cap waiting for a slot;
//! - [`scanner_auth`]: which scanner may reach which endpoint; [`access`]: the rule for whether a
//!   stream may run now; [`running_streams`]: the streams running through this node;
//!   [`enforcement`]: making the rule hold while streams run;
//! - [`refusals`]: refused streams recorded without letting a loop of opens fill the log, and
//!   [`refused_registrations`], refused machines likewise; [`refused_scanners`], scanners turned
//!   away before any stream;
//! - [`notify`]: notifications (email, webhooks) and the retention rule's deletions, claimed so
//!   that one node of a cluster does each;
//! - [`api`]: the management REST API;
//! - [`tls`]: the node's certificate (supplied, or a generated private CA); the secrets and keys a
//!   node writes are written whole or not at all (`ism_files`);
//! - [`metrics`]: what `/metrics` shows, and [`metered_log`], the event log timed for it.
//!
//! - [`state`]: what the node's parts share, handed to each in the narrow form it uses.
//!
//! One scanner request: `socks5::ingress` authorises it (`scanner_auth`), checks access
//! (`access`), finds the endpoint's session (`sessions`), opens a stream (`ism_tunnel::Session::open_stream`), and splices the
//! scanner's socket to it; the endpoint dials the target and splices its side.
#![forbid(unsafe_code)]

pub mod access;
pub mod api;
pub mod cluster;
pub mod copied_identity;
pub mod enforcement;
pub mod http_proxy;
pub mod listener;
pub mod log_pace;
pub mod metered_log;
pub mod metrics;
pub mod node;
pub mod notify;
pub mod public_address;
pub mod refusals;
pub mod refused_registrations;
pub mod refused_scanners;
pub mod running_scans;
pub mod running_streams;
pub mod scanner_auth;
pub mod scanner_stream;
pub mod scans;
pub mod sessions;
pub mod socks5;
pub mod start_rate;
pub mod state;
pub mod stream_queue;
pub mod tls;
pub mod tunnel_acceptor;
pub mod tunnel_threads;
pub mod tunnel_tls;

pub use node::{start, NodeConfig, NodeError, RunningNode};
