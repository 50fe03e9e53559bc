//! `application.properties` as the seed writes it: `key = value` lines, `#` or `!` comments.
//!
//! Parsing is separate from meaning: this module only splits lines and reports where each entry
//! came from, so that [`crate::config`] can say "line 7: socketConnectionTimeoutMs: not a
//! number". Lines split as `java.util.Properties` splits them, since the files were written for
//! the Java endpoint: the key ends at the first `=`, `:` or blank, so `key = value`, `key:value`
//! and `key value` all mean the same. Values are taken literally (no Java escape processing,
//! no continuation lines), which is what the seed's files need: paths and URLs.

/// One `key = value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// Errors name the line and never show its value: a value may be the endpoint key, and these
/// messages reach the console and the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PropertiesError {
    #[error("line {line}: expected `key = value`, found a line starting {start:?} with no `=`, `:` or blank")]
    NoSeparator { line: usize, start: String },
    #[error("line {line}: expected `key = value`, found no key before the `=` or `:`")]
    NoKey { line: usize },
    #[error("line {line}: {key} is set twice (first on line {first})")]
    Duplicate { key: String, line: usize, first: usize },
}

/// What ends a key besides `=` and `:`, as in `java.util.Properties`.
const BLANKS: [char; 3] = [' ', '\t', '\u{c}'];

/// How much of a line without a separator an error shows: enough to recognise a misspelt key,
/// too little to give away a pasted endpoint key.
const SHOWN_PREFIX: usize = 12;

pub fn parse(text: &str) -> Result<Vec<Entry>, PropertiesError> {
    // Windows editors start a UTF-8 file with a byte-order mark, which would join the first key.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out: Vec<Entry> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with('!') {
            continue;
        }
        let (key, value) = split(t).ok_or_else(|| PropertiesError::NoSeparator {
            line,
            start: t.chars().take(SHOWN_PREFIX).collect(),
        })?;
        if key.is_empty() {
            return Err(PropertiesError::NoKey { line });
        }
        if let Some(first) = out.iter().find(|e| e.key == key) {
            return Err(PropertiesError::Duplicate { key: key.into(), line, first: first.line });
        }
        out.push(Entry { key: key.into(), value: value.into(), line });
    }
    Ok(out)
}

/// Splits a trimmed line into key and value: the key ends at the first `=`, `:` or blank; blanks,
/// at most one `=` or `:`, and blanks again separate it from the value. `None` when nothing ends
/// the key.
fn split(t: &str) -> Option<(&str, &str)> {
    let end = t.find(|c| c == '=' || c == ':' || BLANKS.contains(&c))?;
    let (key, rest) = t.split_at(end);
    let rest = rest.trim_start_matches(BLANKS);
    let rest = rest.strip_prefix(['=', ':']).unwrap_or(rest);
    Some((key, rest.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_seed_example() {
        let text = "#application key\ntoken = $TOKEN$\n#gateway host name\ngateway = $GATEWAY$\nwebsocketProtocol = wss\nwsendpoint = /wsendpoint\ndiagnosticUrl = https://www.veracode.com\n";
        let e = parse(text).unwrap();
        assert_eq!(e.len(), 5);
        assert_eq!(e[0], Entry { key: "token".into(), value: "$TOKEN$".into(), line: 2 });
        assert_eq!(
            e[4].value, "https://www.veracode.com",
            "the first separator splits; the URL keeps its colon"
        );
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(
            parse("a = 1\n\njunk\n"),
            Err(PropertiesError::NoSeparator { line: 3, start: "junk".into() })
        );
        assert_eq!(
            parse("a = 1\na = 2\n"),
            Err(PropertiesError::Duplicate { key: "a".into(), line: 2, first: 1 })
        );
    }

    #[test]
    fn a_blank_separates_as_in_java_and_errors_never_show_a_value() {
        let e = parse("token abc-secret\ngateway:gw\n").unwrap();
        assert_eq!(e[0], Entry { key: "token".into(), value: "abc-secret".into(), line: 1 });
        assert_eq!((e[1].key.as_str(), e[1].value.as_str()), ("gateway", "gw"));
        for text in ["= abc-secret\n", "a = 1\nisme_0123456789abc-secret\n"] {
            let err = parse(text).unwrap_err().to_string();
            assert!(!err.contains("secret"), "{err}");
            assert!(err.contains(&format!("line {}", text.lines().count())), "{err}");
        }
    }

    #[test]
    fn a_byte_order_mark_does_not_join_the_first_line() {
        let e = parse("\u{feff}#application key\ntoken = abc\n").unwrap();
        assert_eq!(e, vec![Entry { key: "token".into(), value: "abc".into(), line: 2 }]);
    }
}
