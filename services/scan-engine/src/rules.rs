//! Every rule a finding can come from: its stable id, default severity, what it means and how to
//! fix it. The reports take names and remediations from here, so a finding stored as an event
//! only carries the id.

use crate::Severity;

/// One passive check's rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Short, stable, kebab-case: stored in events and reports, never renamed.
    pub id: &'static str,
    /// A short title for people.
    pub name: &'static str,
    /// The usual severity; a few rules weigh a finding by its context (a cookie without
    /// `Secure` is worse over https, where the flag is the only protection).
    pub severity: Severity,
    /// What the rule saw and why it matters.
    pub description: &'static str,
    /// What the application's owner should change.
    pub remediation: &'static str,
}

pub const MISSING_CSP: Rule = Rule {
    id: "missing-csp",
    name: "Content-Security-Policy header missing",
    severity: Severity::Low,
    description: "HTML pages of this origin are served without a Content-Security-Policy \
        header, so a browser loads scripts from anywhere an injection puts them: any \
        cross-site scripting flaw is fully exploitable.",
    remediation: "Send a Content-Security-Policy header on every HTML response, starting from \
        `default-src 'self'` and allowing only the sources the pages need.",
};

pub const MISSING_HSTS: Rule = Rule {
    id: "missing-hsts",
    name: "Strict-Transport-Security header missing",
    severity: Severity::Low,
    description: "HTML pages of this https origin are served without Strict-Transport-Security \
        (or with max-age=0): a browser may still be talked into plain http, where the traffic \
        can be read and changed.",
    remediation: "Send `Strict-Transport-Security: max-age=31536000; includeSubDomains` on \
        every https response once the whole site works over https.",
};

pub const MISSING_NOSNIFF: Rule = Rule {
    id: "missing-nosniff",
    name: "X-Content-Type-Options: nosniff missing",
    severity: Severity::Low,
    description: "Responses are served without `X-Content-Type-Options: nosniff`: a browser may \
        guess another content type than the one declared and run an uploaded file as a script \
        or a page.",
    remediation: "Send `X-Content-Type-Options: nosniff` on every response, with a correct \
        Content-Type.",
};

pub const MISSING_CLICKJACKING_PROTECTION: Rule = Rule {
    id: "missing-clickjacking-protection",
    name: "Pages can be framed by other sites",
    severity: Severity::Low,
    description: "HTML pages have neither X-Frame-Options nor a Content-Security-Policy \
        `frame-ancestors` directive: another site can show them in an invisible frame and trick \
        a signed-in user into clicking (clickjacking).",
    remediation: "Send `Content-Security-Policy: frame-ancestors 'self'` (or 'none'), and \
        `X-Frame-Options: DENY` or `SAMEORIGIN` for older browsers.",
};

pub const MISSING_REFERRER_POLICY: Rule = Rule {
    id: "missing-referrer-policy",
    name: "Referrer-Policy header missing",
    severity: Severity::Info,
    description: "HTML pages are served without a Referrer-Policy header: internal URLs, with \
        whatever their paths and queries hold, may leak to other sites in the Referer header.",
    remediation: "Send `Referrer-Policy: strict-origin-when-cross-origin` (or `no-referrer`).",
};

pub const COOKIE_WITHOUT_SECURE: Rule = Rule {
    id: "cookie-without-secure",
    name: "Cookie without the Secure flag",
    severity: Severity::Medium,
    description: "A cookie is set without the Secure flag, so the browser also sends it over \
        plain http where it can be read. Medium on https origins (the flag is missing where it \
        would protect), low on plain-http origins (the whole origin is unprotected).",
    remediation: "Serve the application over https only and set every cookie with `Secure`.",
};

pub const COOKIE_WITHOUT_HTTPONLY: Rule = Rule {
    id: "cookie-without-httponly",
    name: "Cookie without the HttpOnly flag",
    severity: Severity::Medium,
    description: "A cookie is set without HttpOnly, so scripts in the page can read it: a \
        cross-site scripting flaw can steal the session.",
    remediation: "Set `HttpOnly` on every cookie that scripts do not need, session cookies \
        first.",
};

pub const COOKIE_WITHOUT_SAMESITE: Rule = Rule {
    id: "cookie-without-samesite",
    name: "Cookie without the SameSite attribute",
    severity: Severity::Low,
    description: "A cookie is set without SameSite: older browsers send it with requests other \
        sites start, which helps cross-site request forgery.",
    remediation: "Set `SameSite=Lax` (or `Strict`) on every cookie; `None` only with `Secure` \
        where cross-site use is intended.",
};

pub const VERSION_DISCLOSURE: Rule = Rule {
    id: "version-disclosure",
    name: "Software version disclosed in a header",
    severity: Severity::Info,
    description: "A Server, X-Powered-By or X-AspNet-Version header names the software and its \
        version, which tells an attacker which known vulnerabilities to try.",
    remediation: "Remove the version (or the whole header): `ServerTokens Prod` (Apache), \
        `server_tokens off` (nginx), `expose_php = Off` (PHP), `enableVersionHeader=false` \
        (ASP.NET).",
};

pub const PASSWORD_OVER_HTTP: Rule = Rule {
    id: "password-over-http",
    name: "Password sent over plain http",
    severity: Severity::High,
    description: "A page with a password field is served over plain http, or a form with a \
        password field submits to an http:// URL: the password crosses the network readable \
        by anyone on the path.",
    remediation: "Serve the page over https and make the form's action an https URL (or \
        relative), then redirect http to https.",
};

pub const MIXED_CONTENT: Rule = Rule {
    id: "mixed-content",
    name: "https page loads http content",
    severity: Severity::Medium,
    description: "An https page loads scripts, frames, images or stylesheets over plain http: \
        whoever is on the path can replace them, and a replaced script controls the page.",
    remediation: "Load every resource over https (or relative URLs); \
        `Content-Security-Policy: upgrade-insecure-requests` helps during the move.",
};

pub const DIRECTORY_LISTING: Rule = Rule {
    id: "directory-listing",
    name: "Directory listing enabled",
    severity: Severity::Medium,
    description: "The server lists the files of a directory: backups, configuration and other \
        files never meant to be linked become easy to find.",
    remediation: "Turn directory listing off (`Options -Indexes` in Apache, `autoindex off` in \
        nginx) and remove files that should not be served.",
};

pub const VERBOSE_ERROR: Rule = Rule {
    id: "verbose-error",
    name: "Verbose error page or stack trace",
    severity: Severity::Medium,
    description: "A response shows a stack trace or a framework's debug page: file paths, \
        versions, code and sometimes configuration values that help an attacker.",
    remediation: "Turn debug mode off in production (Django `DEBUG = False`, Rails production \
        mode, `customErrors` on in ASP.NET, `display_errors = Off` in PHP) and show a generic \
        error page; log the details on the server.",
};

pub const TLS_EXPIRED: Rule = Rule {
    id: "tls-expired",
    name: "TLS certificate expired or not yet valid",
    severity: Severity::High,
    description: "The certificate the server presents is outside its validity period: clients \
        that check it refuse the connection, and users learn to click through warnings.",
    remediation: "Renew the certificate (and automate renewal); check the server's clock if the \
        certificate is not yet valid.",
};

pub const TLS_SELF_SIGNED: Rule = Rule {
    id: "tls-self-signed",
    name: "Self-signed TLS certificate",
    severity: Severity::Medium,
    description: "The server presents a certificate signed by its own key: nothing vouches for \
        it, so a client cannot tell the server from an impostor.",
    remediation: "Use a certificate issued by the organisation's internal CA (distributed to \
        its clients) or a public CA.",
};

pub const TLS_UNTRUSTED: Rule = Rule {
    id: "tls-untrusted",
    name: "TLS certificate not trusted",
    severity: Severity::Medium,
    description: "The server's certificate does not chain to a trusted root (an unknown \
        issuer, a missing intermediate, a bad signature or another defect): clients cannot \
        verify whom they talk to.",
    remediation: "Serve the full chain up to a CA the clients trust (the organisation's \
        internal CA or a public CA), and replace defective certificates.",
};

pub const TLS_WRONG_NAME: Rule = Rule {
    id: "tls-wrong-name",
    name: "TLS certificate for another name",
    severity: Severity::High,
    description: "The certificate does not name the host the client asked for: either the \
        wrong certificate is installed or the client is talking to someone else.",
    remediation: "Install a certificate whose subject alternative names include every host \
        name (and IP address) clients use for the service.",
};

pub const TLS_BELOW_1_2: Rule = Rule {
    id: "tls-below-1.2",
    name: "Only TLS older than 1.2",
    severity: Severity::High,
    description: "The server refused TLS 1.2 and 1.3 and offered an older protocol (SSL 3, TLS \
        1.0 or 1.1), which has known attacks and is deprecated (RFC 8996). The scan could not \
        go further on this origin.",
    remediation: "Enable TLS 1.2 and 1.3 on the server and disable every older version.",
};

/// Every rule, in the order reports list them.
pub const ALL: &[Rule] = &[
    MISSING_CSP,
    MISSING_HSTS,
    MISSING_NOSNIFF,
    MISSING_CLICKJACKING_PROTECTION,
    MISSING_REFERRER_POLICY,
    COOKIE_WITHOUT_SECURE,
    COOKIE_WITHOUT_HTTPONLY,
    COOKIE_WITHOUT_SAMESITE,
    VERSION_DISCLOSURE,
    PASSWORD_OVER_HTTP,
    MIXED_CONTENT,
    DIRECTORY_LISTING,
    VERBOSE_ERROR,
    TLS_EXPIRED,
    TLS_SELF_SIGNED,
    TLS_UNTRUSTED,
    TLS_WRONG_NAME,
    TLS_BELOW_1_2,
];

/// The rule with this id, if there is one (a finding stored by a newer engine may name a rule
/// this one does not know).
pub fn find(id: &str) -> Option<&'static Rule> {
    ALL.iter().find(|r| r.id == id)
}

/// The rule's position in [`ALL`] (SARIF's `ruleIndex`).
pub fn index(id: &str) -> Option<usize> {
    ALL.iter().position(|r| r.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_kebab_case_and_every_rule_is_explained() {
        let mut ids = HashSet::new();
        for rule in ALL {
            assert!(ids.insert(rule.id), "{} twice", rule.id);
            assert!(
                rule.id
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.".contains(c)),
                "{} is not kebab-case",
                rule.id
            );
            for text in [rule.name, rule.description, rule.remediation] {
                assert!(text.len() > 10 && !text.contains("  "), "{}: {text:?}", rule.id);
            }
        }
    }

    #[test]
    fn find_and_index_agree() {
        assert_eq!(find("tls-self-signed").map(|r| r.severity), Some(Severity::Medium));
        assert_eq!(find("no-such-rule"), None);
        for (i, rule) in ALL.iter().enumerate() {
            assert_eq!(index(rule.id), Some(i));
        }
    }
}
