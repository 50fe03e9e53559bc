//! Clients of a gateway node: [`api_client`] for the management REST API, [`scanner`] for the
//! SOCKS5 ingress. The `ism` binary is a thin command line over both.
#![forbid(unsafe_code)]

pub mod api_client;
pub mod scanner;

pub use api_client::{ApiClient, ApiError};
