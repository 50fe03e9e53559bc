//! How the agent ends when it cannot work, as an exit status: a service manager restarts it
//! after a failure that may pass, and must not after a refusal that starting again cannot fix,
//! or it would be refused every few seconds for ever. The installer's systemd unit lists
//! [`ExitStatus::NOT_RETRIED`] in `RestartPreventExitStatus=`; scripts may rely on the numbers.

/// Why the agent stopped, as the number it exits with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// A failure that may pass (the gateway unreachable, a WebSocket blocked, an untrusted
    /// certificate that the operator may fix meanwhile): start it again later.
    Retryable = 3,
    /// The key is bound to another machine ("Token already registered").
    TokenAlreadyRegistered = 10,
    /// The key is wrong, malformed or rotated (or the handshake's signature did not verify).
    InvalidKey = 11,
    /// The endpoint was deleted on the gateway.
    EndpointDeleted = 12,
    /// The gateway does not speak this agent's protocol version.
    UnsupportedVersion = 13,
    /// Another live agent with this machine identity holds the endpoint's session: the machine
    /// key was copied to another host, or a second agent runs on this one.
    MachineKeyCopied = 14,
}

impl ExitStatus {
    /// The statuses after which starting the agent again cannot help.
    pub const NOT_RETRIED: [ExitStatus; 5] = [
        ExitStatus::TokenAlreadyRegistered,
        ExitStatus::InvalidKey,
        ExitStatus::EndpointDeleted,
        ExitStatus::UnsupportedVersion,
        ExitStatus::MachineKeyCopied,
    ];

    pub fn code(self) -> u8 {
        self as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The unit the installer writes exempts exactly these from `Restart=always`.
    #[test]
    fn the_installers_unit_does_not_restart_after_a_refusal_for_good() {
        let install = include_str!("../../../deploy/endpoint/install.sh");
        let codes: Vec<String> =
            ExitStatus::NOT_RETRIED.iter().map(|s| s.code().to_string()).collect();
        let line = format!("\nRestartPreventExitStatus={}\n", codes.join(" "));
        assert!(install.contains(&line), "install.sh must write {line:?}");
        assert!(!ExitStatus::NOT_RETRIED.contains(&ExitStatus::Retryable));
    }
}
