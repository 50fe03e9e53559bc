//! `application.properties` as the seed writes it: `key = value` lines, `#` or `!` comments.
//!
//! Parsing is separate from meaning: this module only splits lines and reports where each entry
//! came from, so that [`crate::config`] can say "line 7: socketConnectionTimeoutMs: not a
//! number". Values are taken literally (no Java escape processing), which is what the seed's
//! files need: paths and URLs.

/// One `key = value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PropertiesError {
    #[error("line {line}: expected `key = value`, found {text:?}")]
    NoSeparator { line: usize, text: String },
    #[error("line {line}: {key} is set twice (first on line {first})")]
    Duplicate { key: String, line: usize, first: usize },
}

pub fn parse(text: &str) -> Result<Vec<Entry>, PropertiesError> {
    let mut out: Vec<Entry> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with('!') {
            continue;
        }
        let Some(sep) = t.find(['=', ':']) else {
            return Err(PropertiesError::NoSeparator { line, text: t.to_string() });
        };
        let key = t[..sep].trim().to_string();
        if key.is_empty() {
            return Err(PropertiesError::NoSeparator { line, text: t.to_string() });
        }
        if let Some(first) = out.iter().find(|e| e.key == key) {
            return Err(PropertiesError::Duplicate { key, line, first: first.line });
        }
        out.push(Entry { key, value: t[sep + 1..].trim().to_string(), line });
    }
    Ok(out)
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
            Err(PropertiesError::NoSeparator { line: 3, text: "junk".into() })
        );
        assert_eq!(
            parse("a = 1\na = 2\n"),
            Err(PropertiesError::Duplicate { key: "a".into(), line: 2, first: 1 })
        );
    }
}
