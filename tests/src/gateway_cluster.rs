//! Several gateway nodes in one cluster: one `nats-server` for their event log and coordination,
//! and what the nodes of a real deployment share (the cluster CA and node certificates, the key
//! secret endpoint keys derive from, the administrator token, the public certificate endpoints
//! trust). Each node runs as a [`TestNode`], so it can be stopped, crashed and restarted alone.

use crate::cluster::{Backend, TestNode};
use crate::nats::NatsServer;
use ism_gateway::cluster::tls::ClusterTlsFiles;
use ism_gateway::cluster::ClusterConfig;
use ism_gateway::tls::TlsSource;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A node's heartbeat in these tests: a lost node is noticed within a couple of seconds.
pub const FAST_HEARTBEAT: Duration = Duration::from_millis(250);
/// How long a node's heartbeat may stand still before it counts as lost, in these tests: eight
/// beats, so a node on a loaded machine is not taken for lost.
pub const FAST_LEASE: Duration = Duration::from_secs(2);

/// What the nodes of one cluster share, made once in a directory: the cluster CA and node
/// certificates (`cluster/`), the key secret, the administrator token, and the one public
/// certificate every node presents (`public/`).
pub struct ClusterFiles {
    dir: tempfile::TempDir,
    pub admin_token: String,
}

impl ClusterFiles {
    /// The files for nodes called `nodes`.
    pub fn new(nodes: &[&str]) -> ClusterFiles {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
        ism_gateway::cluster::tls::generate(&dir.path().join("cluster"), &names).unwrap();
        std::fs::write(dir.path().join("key-secret"), "5ec2e7".repeat(16)).unwrap();
        ism_gateway::tls::load(&TlsSource::Generated {
            dir: dir.path().join("public"),
            sans: Vec::new(),
        })
        .unwrap();
        ClusterFiles { dir, admin_token: "cluster-admin-token-for-tests-0123456789".into() }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// The CA endpoints trust for every node.
    pub fn ca_file(&self) -> PathBuf {
        self.path("public/ca.pem")
    }
}

pub struct TestCluster {
    pub nats: NatsServer,
    pub files: ClusterFiles,
}

impl TestCluster {
    /// A cluster that nodes called `nodes` may join (their certificates are made now).
    pub fn new(nodes: &[&str]) -> TestCluster {
        TestCluster { nats: NatsServer::start(), files: ClusterFiles::new(nodes) }
    }

    /// Starts node `name` in the cluster.
    pub fn node(&self, name: &str) -> TestNode {
        self.node_with(name, |_| {})
    }

    /// As [`node`](Self::node), with `adjust` applied to its configuration as well.
    pub fn node_with(
        &self,
        name: &str,
        adjust: impl Fn(&mut ism_gateway::NodeConfig) + Send + Sync + 'static,
    ) -> TestNode {
        let shared = self.files.dir.path().to_path_buf();
        let (name_owned, admin) = (name.to_string(), self.files.admin_token.clone());
        TestNode::start_with(name, Backend::JetStream(self.nats.url().to_string()), move |c| {
            let tls = ClusterTlsFiles::in_dir(&shared.join("cluster"), &name_owned);
            let mut cluster = ClusterConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), tls);
            cluster.heartbeat = FAST_HEARTBEAT;
            cluster.lease = FAST_LEASE;
            c.cluster = Some(cluster);
            c.key_secret_file = Some(shared.join("key-secret"));
            c.admin_token = Some(admin.clone());
            // Every node presents the one public certificate, found where a node keeps the one
            // it generates, so endpoints trust all of them with one `gatewayCaFile`.
            let tls = c.data_dir.join("tls");
            std::fs::create_dir_all(&tls).unwrap();
            for file in ["ca.pem", "cert.pem", "key.pem"] {
                std::fs::copy(shared.join("public").join(file), tls.join(file)).unwrap();
            }
            adjust(c);
        })
    }
}

/// The `gateway` setting for an endpoint that may use any of `nodes`, in that order.
pub fn gateways(nodes: &[&TestNode]) -> String {
    nodes.iter().map(|n| n.addresses.endpoint_wss.to_string()).collect::<Vec<_>>().join(",")
}
