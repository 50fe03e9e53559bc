//! The seed's error messages for the endpoint's failure cases, each with its cause and fix, so an
//! operator who searches the documentation for the message finds the same solution.

/// One failure as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    /// The seed's message, as it appears in the log after `ERROR - `.
    pub message: String,
    /// What went wrong underneath.
    pub cause: String,
    /// What to do about it.
    pub solution: &'static str,
}

impl Diagnosis {
    /// The line the seed prints when this failure ends the endpoint at start-up.
    pub fn exit_line(&self) -> String {
        format!("Exit due to initialization failure: {}", self.message)
    }
}

impl std::fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (cause: {}). Solution: {}", self.message, self.cause, self.solution)
    }
}

pub fn gateway_unreachable(cause: impl Into<String>) -> Diagnosis {
    Diagnosis {
        message: "Failed to reach the gateway".into(),
        cause: cause.into(),
        solution: "Verify that the gateway server on port 443 is on your allowlist and available from the machine on which the endpoint is installed.",
    }
}

pub fn websocket_failed(cause: impl Into<String>) -> Diagnosis {
    Diagnosis {
        message: "Failed to make websocket connection to gateway".into(),
        cause: cause.into(),
        solution: "Verify that WebSockets are allowed in your firewall or proxy configuration for port 443.",
    }
}

pub fn token_already_registered() -> Diagnosis {
    Diagnosis {
        message: r#"GMS API invoke failed, cause : {"error":"Token already registered","success":false}"#.into(),
        cause: "this endpoint key is bound to another machine".into(),
        solution: "Run the endpoint on the machine on which it originally ran. If you want to run an endpoint on another machine, you must create a new endpoint.",
    }
}

pub fn invalid_key(cause: impl Into<String>) -> Diagnosis {
    Diagnosis {
        message: "Failure to authenticate endpoint key".into(),
        cause: cause.into(),
        solution: "Copy the endpoint key to your clipboard directly from the gateway page (Actions > Copy Endpoint Key). If you still encounter an error, verify that you have not already installed an endpoint with that key on another machine. If your network inspects TLS, set gatewayCaFile to its CA certificate.",
    }
}

pub fn unsupported_version(cause: impl Into<String>) -> Diagnosis {
    Diagnosis {
        message: "Endpoint version not supported by the gateway".into(),
        cause: cause.into(),
        solution: "Update the endpoint to the latest version (run the installer again).",
    }
}

/// The seed's explanation of a failed gateway diagnostic.
pub const GATEWAY_DIAGNOSTIC_ADVICE: &str = "The most likely cause of a gateway diagnostic exception is a firewall or proxy server that blocks WebSocket traffic. To resolve this error, you must configure your firewall to allow WebSocket traffic to the gateway.";

/// The seed's explanation of a failed destination diagnostic.
pub const DESTINATION_DIAGNOSTIC_ADVICE: &str = "The most likely cause of a destination diagnostic exception is that your proxy does not allow access to the URL from the endpoint machine. To resolve this error, you must configure your proxy to allow your endpoint machine to access the destination URL.";
