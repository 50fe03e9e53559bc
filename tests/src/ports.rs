//! Loopback ports for the servers a test starts, taken below the system's ephemeral range.
//!
//! Why not port 0: a port the system chose is an ephemeral one, and when a node stops and is
//! started again on the same ports (a restart a test makes), any outgoing connection made
//! meanwhile, by this test or any other running beside it, may be given that port as its local
//! port, and the restarted node then fails with "Address already in use" (it did, in CI, in the
//! rolling-restart test). Connections are never given a port below the ephemeral range, so the
//! only contenders there are other tests' allocations, which start at random places in a range of
//! thousands and claim a port among test processes before they probe it ([`claim`]).

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};

/// The lowest port handed out: above the well-known and registered ports most services use.
const LOWEST: u16 = 12_000;

/// Ports connections are never given: from [`LOWEST`] to below the ephemeral range.
fn range() -> std::ops::Range<u16> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    LOWEST..ephemeral_low.max(LOWEST + 1_000)
}

/// A random starting point: each test process probes from a different place.
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}

/// Claims `port` for this process among the test processes of the machine: an exclusive `flock`
/// on a file named for it, held until the process ends (the kernel lets go of it then, however
/// the process ends). A probe alone was not enough: a port probed free and let go until the
/// test's server bound it could be probed free by a test running beside it, and one of the two
/// servers then failed with "Address already in use" (it did, in CI). Where no lock file can be
/// made, the port is taken unclaimed, as before.
fn claim(port: u16) -> bool {
    use rustix::fs::{flock, FlockOperation};
    static HELD: std::sync::Mutex<Vec<std::fs::File>> = std::sync::Mutex::new(Vec::new());
    let dir = std::env::temp_dir().join("ism-test-ports");
    let _ = std::fs::create_dir_all(&dir);
    let opened = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(port.to_string()));
    let Ok(file) = opened else {
        return true;
    };
    if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
        return false;
    }
    HELD.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(file);
    true
}

/// Calls `take` on ports of the range that this process could claim, from a random one on,
/// until it takes one.
fn first_taken<T>(mut take: impl FnMut(u16) -> Option<T>) -> T {
    let range = range();
    let size = u64::from(range.end - range.start);
    let start = random() % size;
    (0..size)
        .map(|i| range.start + ((start + i) % size) as u16)
        .find_map(|port| claim(port).then(|| take(port)).flatten())
        .expect("a free loopback port below the ephemeral range")
}

/// A loopback port free now, below the ephemeral range: nothing but another test's allocation
/// takes it before the server the test starts binds it, nor while that server is restarted.
pub fn free_port() -> u16 {
    first_taken(|port| TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).ok())
        .local_addr()
        .unwrap()
        .port()
}

/// A loopback port held bound but not listening: connections to it are refused (a service that
/// is down), and no other process can take it until [`release`](Self::release) hands it over.
pub struct ReservedPort {
    pub port: u16,
    _socket: std::os::fd::OwnedFd,
}

impl ReservedPort {
    pub fn new() -> Self {
        use rustix::net::{bind, socket, AddressFamily, SocketType};
        first_taken(|port| {
            let socket = socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
            bind(&socket, &SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).ok()?;
            Some(Self { port, _socket: socket })
        })
    }

    /// Gives the port up, for the service that will listen on it now.
    pub fn release(self) -> u16 {
        self.port
    }
}

impl Default for ReservedPort {
    fn default() -> Self {
        Self::new()
    }
}
