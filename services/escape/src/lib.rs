//! Text made safe to show: configured URLs without their secrets ([`without_credentials`]), and
//! untrusted text on one line ([`escaped`]): what a scanner, an endpoint or an old event
//! says (a target, a host name, a reason, a name) can reach a log line, the audit timeline or an
//! error body, and must never start a new line there or drive the terminal that shows it.
//!
//! This is the one home of that rule, a crate of its own so that everything that shows such
//! text can use it: `ism-events` re-exports it for the projectors' audit timeline, the `ism` CLI
//! and the gateway's log lines and HTTP error bodies; the endpoint agent uses it for its log
//! lines and spans, and `ism-glibc` for what the environment says at start-up. The sans-IO
//! ingress parsers never echo the bytes they refuse, so they need no escaping.
//!
//! Escaped, as Rust writes them (`\n`, `\r`, `\t`, `\u{1b}`):
//! - every control character (Unicode `Cc`: C0, DEL, C1), so no LF, CR, VT, FF or NEL breaks
//!   the line and no ESC or CSI starts a terminal control sequence;
//! - the Unicode line and paragraph separators (U+2028, U+2029), which viewers also break on;
//! - the bidirectional formatting characters (U+061C, U+200E, U+200F, U+202A..U+202E,
//!   U+2066..U+2069), which would make the rest of a line read in another order than it holds.
//!
//! Everything else passes unchanged, backslashes included: this is a way to show text, not a
//! serialisation (the exact value is in the JSON). So escaping is idempotent: text already
//! escaped (here, or by `{:?}`) is shown as it is, and several layers may each escape safely.

use std::fmt::{self, Write};

/// `url` as it may be shown (logs, `/status`, errors): the credentials before its host (user and
/// password, or a token) replaced by `***`, so that a secret in a configured URL (the event
/// log's, the SMTP relay's) never leaves the configuration. Everything before the last `@` after
/// the scheme goes (a password holding a `/`, not percent-encoded, must not end it early), and
/// before the last `@` of an address without a scheme (NATS takes `user:pass@host:4222`).
pub fn without_credentials(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    match rest.rfind('@') {
        Some(at) => format!("{scheme}***{}", &rest[at..]),
        None => url.to_string(),
    }
}

/// `value`'s text, shown with [`needs_escape`] characters escaped. Wraps anything `Display`: a
/// string, or an error whose message carries untrusted text (`tracing` fields: `%escaped(&e)`).
pub fn escaped<T: fmt::Display>(value: T) -> Escaped<T> {
    Escaped(value)
}

/// A value shown escaped; see [`escaped`]. Width and fill flags are not applied: pad the
/// escaped text (`escaped(x).to_string()`) instead.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<T>(T);

impl<T: fmt::Display> fmt::Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(Escaping(f), "{}", self.0)
    }
}

/// Whether `c` is shown escaped (the rule above).
pub fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// Passes text through to the formatter, escaping what [`needs_escape`] says, in runs so that
/// clean text is written in one piece.
struct Escaping<'a, 'b>(&'a mut fmt::Formatter<'b>);

impl Write for Escaping<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut clean = 0;
        for (i, c) in s.char_indices() {
            if needs_escape(c) {
                self.0.write_str(&s[clean..i])?;
                match c {
                    '\n' => self.0.write_str("\\n")?,
                    '\r' => self.0.write_str("\\r")?,
                    '\t' => self.0.write_str("\\t")?,
                    other => write!(self.0, "\\u{{{:x}}}", other as u32)?,
                }
                clean = i + c.len_utf8();
            }
        }
        self.0.write_str(&s[clean..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_url_is_shown_without_its_credentials() {
        let cases = [
            ("smtp://bot:pa/ss@mail:587?tls=required", "smtp://***@mail:587?tls=required"),
            ("nats://tok3n@nats-2:4222", "nats://***@nats-2:4222"),
            ("smtps://mail:465", "smtps://mail:465"),
            ("ism:s3cret@nats-1:4222", "***@nats-1:4222"),
            ("not a url", "not a url"),
        ];
        for (url, shown) in cases {
            assert_eq!(without_credentials(url), shown, "{url}");
        }
    }

    fn shown(text: &str) -> String {
        escaped(text).to_string()
    }

    #[test]
    fn line_breaks_and_terminal_controls_are_escaped() {
        assert_eq!(shown("a\nb\r\nc\td"), "a\\nb\\r\\nc\\td");
        assert_eq!(shown("x\u{1b}[2Jy\u{7}"), "x\\u{1b}[2Jy\\u{7}");
        assert_eq!(shown("\u{9b}31m\u{85}\u{7f}\0"), "\\u{9b}31m\\u{85}\\u{7f}\\u{0}");
        assert_eq!(shown("a\u{2028}b\u{2029}c"), "a\\u{2028}b\\u{2029}c");
        assert_eq!(shown("admin\u{202e}nimda\u{2066}"), "admin\\u{202e}nimda\\u{2066}");
    }

    #[test]
    fn ordinary_text_is_unchanged() {
        for text in ["", "dc1", "10.0.0.1:80", "C:\\scans", "Zürich 東京 ✓", "say \"hi\""] {
            assert_eq!(shown(text), text);
        }
    }

    #[test]
    fn wraps_any_display_such_as_an_error() {
        let e = std::io::Error::other("refused:\n#202 EndpointDeleted");
        assert_eq!(escaped(&e).to_string(), "refused:\\n#202 EndpointDeleted");
        assert_eq!(format!("[{}]", escaped(format_args!("{}\u{1b}", 1))), "[1\\u{1b}]");
    }

    proptest! {
        #[test]
        fn nothing_escaped_is_left_and_escaping_again_changes_nothing(text in any::<String>()) {
            let once = shown(&text);
            prop_assert!(!once.chars().any(needs_escape), "{once:?}");
            prop_assert_eq!(shown(&once), once.clone());
            // Everything not escaped is still there, in order.
            let kept: String = text.chars().filter(|c| !needs_escape(*c)).collect();
            prop_assert!(is_subsequence(&kept, &once));
        }
    }

    fn is_subsequence(needle: &str, hay: &str) -> bool {
        let mut hay = hay.chars();
        needle.chars().all(|c| hay.any(|h| h == c))
    }
}
