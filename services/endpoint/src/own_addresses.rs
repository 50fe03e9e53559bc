//! This host's own addresses, on every interface: a scanner must not reach them through broad
//! rules (`*`, a subnet) any more than the host's loopback, since a service listening on all
//! interfaces answers on each of them as it does on 127.0.0.1 (the agent's own metrics listener
//! among them). The dialer withholds them unless a rule names the address exactly.
//!
//! Read from the interfaces at most once per `FRESH_FOR`: an address that DHCP changes is
//! known within seconds, and a burst of opens costs one read.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a reading of the interfaces stands.
const FRESH_FOR: Duration = Duration::from_secs(5);

/// Where the addresses come from.
enum Source {
    /// This host's interfaces.
    Interfaces,
    /// A list fixed up front (tests, which must not depend on this machine's interfaces).
    #[cfg(test)]
    Fixed(Arc<[IpAddr]>),
}

/// This host's addresses, read when last read more than `FRESH_FOR` ago.
pub struct OwnAddresses {
    source: Source,
    read: Mutex<Option<(Instant, Arc<[IpAddr]>)>>,
}

impl OwnAddresses {
    /// The addresses of this host's interfaces.
    pub fn of_this_host() -> Self {
        Self { source: Source::Interfaces, read: Mutex::new(None) }
    }

    /// `addresses`, whatever the interfaces hold.
    #[cfg(test)]
    pub fn fixed(addresses: impl IntoIterator<Item = IpAddr>) -> Self {
        let addresses = addresses.into_iter().map(ism_addresses::normalise).collect();
        Self { source: Source::Fixed(addresses), read: Mutex::new(None) }
    }

    /// The addresses as they stand (normalised: IPv4-mapped IPv6 as IPv4), but for the sensitive
    /// ones (loopback). When the interfaces cannot be read, the last reading stands (none before
    /// the first: then only the allowlist's own rules apply), with a warning.
    pub fn get(&self) -> Arc<[IpAddr]> {
        match &self.source {
            Source::Interfaces => {}
            #[cfg(test)]
            Source::Fixed(addresses) => return addresses.clone(),
        }
        let mut read = self.read.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if let Some((at, addresses)) = read.as_ref() {
            if now.duration_since(*at) < FRESH_FOR {
                return addresses.clone();
            }
        }
        let addresses = match if_addrs::get_if_addrs() {
            // The sensitive ones (loopback) are withheld by their own rule, which a CIDR inside
            // their range satisfies (`127.0.0.0/8`): not the exact naming asked of these.
            Ok(interfaces) => interfaces
                .iter()
                .map(|i| ism_addresses::normalise(i.ip()))
                .filter(|ip| ism_addresses::sensitive_range(*ip).is_none())
                .collect::<Arc<[_]>>(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read this host's interface addresses: the last reading stands");
                read.as_ref().map(|(_, last)| last.clone()).unwrap_or_else(|| Arc::from([]))
            }
        };
        *read = Some((now, addresses.clone()));
        addresses
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_hosts_addresses_leave_its_loopback_to_its_own_rule_and_are_read_again_when_stale() {
        let own = OwnAddresses::of_this_host();
        let first = own.get();
        assert!(!first.iter().any(|ip| ip.is_loopback()), "{first:?}");
        assert!(Arc::ptr_eq(&first, &own.get()), "a fresh reading stands");
        own.read.lock().unwrap().as_mut().unwrap().0 -= FRESH_FOR;
        assert!(!Arc::ptr_eq(&first, &own.get()), "a stale one is read again");
    }
}
