//! Rules for the names and descriptions users type.

/// Why a name or description was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("{field} is required")]
    Empty { field: &'static str },
    #[error("{field} is too long: {len} characters (at most {max})")]
    TooLong { field: &'static str, len: usize, max: usize },
    #[error("{field} must contain only ASCII characters (names and descriptions do not support UTF-8); found {found:?} at position {position}")]
    NotAscii { field: &'static str, found: char, position: usize },
    #[error("{field} contains a control character at position {position}")]
    Control { field: &'static str, position: usize },
}

/// Checks a user-entered field: printable ASCII only (as the seed's product), within `max`
/// characters, and non-empty when `required`. Leading and trailing spaces are trimmed.
pub fn checked(
    field: &'static str,
    value: &str,
    max: usize,
    required: bool,
) -> Result<String, TextError> {
    let value = value.trim();
    if let Some((position, found)) = value.chars().enumerate().find(|(_, c)| !c.is_ascii()) {
        return Err(TextError::NotAscii { field, found, position });
    }
    if let Some(position) = value.chars().position(|c| c.is_ascii_control()) {
        return Err(TextError::Control { field, position });
    }
    if required && value.is_empty() {
        return Err(TextError::Empty { field });
    }
    if value.len() > max {
        return Err(TextError::TooLong { field, len: value.len(), max });
    }
    Ok(value.to_string())
}

/// Longest name of a gateway or endpoint.
pub const MAX_NAME: usize = 64;
/// Longest description.
pub const MAX_DESCRIPTION: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_ascii_is_refused_with_the_character_and_position() {
        let err = checked("name", "caf\u{e9}", 64, true).unwrap_err();
        assert_eq!(err, TextError::NotAscii { field: "name", found: '\u{e9}', position: 3 });
        assert!(err.to_string().contains("only ASCII"));
    }

    #[test]
    fn limits_and_trimming() {
        assert_eq!(checked("name", "  dc1  ", 64, true).unwrap(), "dc1");
        assert_eq!(checked("name", "   ", 64, true), Err(TextError::Empty { field: "name" }));
        assert!(checked("description", "", 64, false).is_ok());
        assert!(matches!(
            checked("name", &"x".repeat(65), 64, true),
            Err(TextError::TooLong { .. })
        ));
        assert!(matches!(checked("name", "a\tb", 64, true), Err(TextError::Control { .. })));
    }
}
