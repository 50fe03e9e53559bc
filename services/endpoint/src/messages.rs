//! The seed's error messages for the endpoint's failure cases, each with its cause and fix, so an
//! operator who searches the documentation for the message finds the same solution, and the
//! status the agent exits with when the failure ends it.

use crate::exit::ExitStatus;
use ism_escape::escaped;

/// One failure as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    /// The seed's message, as it appears in the log after `ERROR - `.
    pub message: String,
    /// What went wrong underneath.
    pub cause: String,
    /// What to do about it.
    pub solution: String,
    /// What the agent exits with when this failure ends it.
    pub exit: ExitStatus,
}

impl Diagnosis {
    /// The line the seed prints when this failure ends the endpoint at start-up.
    pub fn exit_line(&self) -> String {
        format!("Exit due to initialization failure: {}", self.message)
    }

    /// The log line after the message. The cause may carry the gateway's words (the reason it
    /// refused the key, say) or a proxy's, so it is shown escaped.
    pub fn cause_line(&self) -> String {
        format!("cause: {}; solution: {}", escaped(&self.cause), escaped(&self.solution))
    }
}

const UNREACHABLE: &str = "Failed to reach the gateway";
const WEBSOCKET_FAILED: &str = "Failed to make websocket connection to gateway";

impl Diagnosis {
    /// Whether the network between the endpoint and the gateway is to blame, so that the seed's
    /// advice about firewalls and WebSockets applies (it does not to a refused key, say).
    pub fn blames_the_network(&self) -> bool {
        self.message == UNREACHABLE || self.message == WEBSOCKET_FAILED
    }
}

impl std::fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (cause: {}). Solution: {}", self.message, self.cause, self.solution)
    }
}

/// The gateway's address did not answer; `port` is the one the endpoint dialled.
pub fn gateway_unreachable(port: u16, cause: impl Into<String>) -> Diagnosis {
    Diagnosis {
        message: UNREACHABLE.into(),
        cause: cause.into(),
        solution: format!("Verify that the gateway server on port {port} is on your allowlist and available from the machine on which the endpoint is installed."),
        exit: ExitStatus::Retryable,
    }
}

pub fn websocket_failed(port: u16, cause: impl Into<String>) -> Diagnosis {
    Diagnosis {
        message: WEBSOCKET_FAILED.into(),
        cause: cause.into(),
        solution: format!("Verify that WebSockets are allowed in your firewall or proxy configuration for port {port}."),
        exit: ExitStatus::Retryable,
    }
}

/// TLS refused the certificate the gateway (or something posing as it) presented: no firewall
/// rule fixes that, trusting the right CA does.
pub fn gateway_certificate_untrusted(cause: impl Into<String>) -> Diagnosis {
    Diagnosis {
        message: "The gateway's TLS certificate is not trusted".into(),
        cause: cause.into(),
        solution: "If the gateway uses a private CA, set gatewayCaFile to that CA's certificate (the gateway node prints its path at start-up). If a proxy or firewall on your network inspects TLS, set gatewayCaFile to the certificate of the CA it signs with, or have the gateway exempted from inspection.".into(),
        exit: ExitStatus::Retryable,
    }
}

pub fn token_already_registered() -> Diagnosis {
    Diagnosis {
        message: r#"GMS API invoke failed, cause : {"error":"Token already registered","success":false}"#.into(),
        cause: "this endpoint key is bound to another machine".into(),
        solution: "Run the endpoint on the machine on which it originally ran. If you want to run an endpoint on another machine, you must create a new endpoint.".into(),
        exit: ExitStatus::TokenAlreadyRegistered,
    }
}

pub fn invalid_key(cause: impl Into<String>) -> Diagnosis {
    Diagnosis {
        message: "Failure to authenticate endpoint key".into(),
        cause: cause.into(),
        solution: "Copy the endpoint key to your clipboard directly from the gateway page (Actions > Copy Endpoint Key). If you still encounter an error, verify that you have not already installed an endpoint with that key on another machine. If your network inspects TLS, set gatewayCaFile to its CA certificate.".into(),
        exit: ExitStatus::InvalidKey,
    }
}

/// The endpoint was deleted on the gateway: its key will never work again.
pub fn endpoint_deleted(cause: impl Into<String>) -> Diagnosis {
    Diagnosis {
        message: "This endpoint was deleted from its gateway".into(),
        cause: cause.into(),
        solution: "Its key no longer works and cannot work again. To keep scanning this network, add a new endpoint on the gateway page and install it with the new key; otherwise uninstall this endpoint.".into(),
        exit: ExitStatus::EndpointDeleted,
    }
}

/// Another live agent with this machine identity holds the endpoint's session (the gateway says
/// on which host): starting this one again would only take the session back and forth.
pub fn machine_key_copied(cause: impl Into<String>) -> Diagnosis {
    Diagnosis {
        message: "This machine identity is in use by another running endpoint".into(),
        cause: cause.into(),
        solution: "Each running endpoint needs a machine identity of its own, and data/machine.key was copied (with the install folder, a disk image or a virtual machine clone) or a second endpoint was started here. Run this endpoint on one host only: uninstall it (uninstall.sh) on the host that should not run it, then start it again on the other (systemctl restart ism-endpoint). To scan from both hosts, add a new endpoint on the gateway page and install it on the second host with its key, without --keep-identity, so that it gets an identity of its own. To move this endpoint to a host with a new identity, uninstall it on the old host and have a manager release its binding (ism endpoint unbind).".into(),
        exit: ExitStatus::MachineKeyCopied,
    }
}

pub fn unsupported_version(cause: impl Into<String>) -> Diagnosis {
    Diagnosis {
        message: "Endpoint version not supported by the gateway".into(),
        cause: cause.into(),
        solution: "Update the endpoint to the latest version (run the installer again).".into(),
        exit: ExitStatus::UnsupportedVersion,
    }
}

/// The seed's explanation of a failed gateway diagnostic.
pub const GATEWAY_DIAGNOSTIC_ADVICE: &str = "The most likely cause of a gateway diagnostic exception is a firewall or proxy server that blocks WebSocket traffic. To resolve this error, you must configure your firewall to allow WebSocket traffic to the gateway.";

/// The seed's explanation of a failed destination diagnostic, right when the web proxy carried
/// the request.
pub const DESTINATION_VIA_PROXY_ADVICE: &str = "The most likely cause of a destination diagnostic exception is that your proxy does not allow access to the URL from the endpoint machine. To resolve this error, you must configure your proxy to allow your endpoint machine to access the destination URL.";

/// A failed destination diagnostic when the endpoint reached for the URL itself.
pub const DESTINATION_DIRECT_ADVICE: &str = "The most likely cause of a destination diagnostic exception is that the endpoint machine cannot reach the URL (name resolution, routing, or a firewall between them). To resolve this error, make sure the URL opens from the endpoint machine, as the scans will open it from there.";

/// A failed destination diagnostic when the endpoint's own allowlist refused the URL.
pub const DESTINATION_NOT_ALLOWED_ADVICE: &str = "The most likely cause of a destination diagnostic exception is that allowedTargets in this endpoint's application.properties does not list the URL's host and port. To resolve this error, add them to allowedTargets, or test a URL it lists.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_line_shows_the_gateways_words_escaped() {
        let d = invalid_key("no such key\n2026-01-01 INFO - forged");
        assert_eq!(
            d.cause_line().split("; solution").next(),
            Some("cause: no such key\\n2026-01-01 INFO - forged")
        );
    }
}
