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

impl std::fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (cause: {}). Solution: {}", self.message, self.cause, self.solution)
    }
}

pub fn gateway_unreachable(cause: impl Into<String>) -> Diagnosis {
    Diagnosis {
        message: "Exit due to initialization failure: Failed to reach the gateway".into(),
        cause: cause.into(),
        solution: "Verify that the gateway server on port 443 is on your allowlist and available from the machine on which the endpoint is installed.",
    }
}

pub fn websocket_failed(cause: impl Into<String>) -> Diagnosis {
    Diagnosis {
        message: "Exit due to initialization failure: Failed to make websocket connection to gateway".into(),
        cause: cause.into(),
        solution: "Verify that WebSockets are allowed in your firewall or proxy configuration for port 443.",
    }
}

pub fn token_already_registered() -> Diagnosis {
    Diagnosis {
        message: r#"Exit due to initialization failure: GMS API invoke failed, cause : {"error":"Token already registered","success":false}"#.into(),
        cause: "this endpoint key is bound to another machine".into(),
        solution: "Run the endpoint on the machine on which it originally ran. If you want to run an endpoint on another machine, you must create a new endpoint.",
    }
}

pub fn invalid_key(cause: impl Into<String>) -> Diagnosis {
    Diagnosis {
        message: "Exit due to initialization failure: Failure to authenticate endpoint key".into(),
        cause: cause.into(),
        solution: "Copy the endpoint key to your clipboard directly from the gateway page (Actions > Copy Endpoint Key). If you still encounter an error, verify that you have not already installed an endpoint with that key on another machine.",
    }
}

pub fn unsupported_version(cause: impl Into<String>) -> Diagnosis {
    Diagnosis {
        message: "Exit due to initialization failure: endpoint version not supported by the gateway".into(),
        cause: cause.into(),
        solution: "Update the endpoint to the latest version (run the installer again).",
    }
}
