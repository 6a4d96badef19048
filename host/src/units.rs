//! Sizes and durations as people write them in flags, the TOML file and the API
//! (`64MiB`, `30s`), parsed with errors that name the setting.

use std::time::Duration;

/// Parses a size like `64MiB` for the setting `what`.
pub fn parse_bytes(what: &str, text: &str) -> Result<u64, String> {
    text.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("{what}: {text:?} is not a size (like 64MiB): {e}"))
}

/// Parses a duration like `30s` for the setting `what`.
pub fn parse_duration(what: &str, text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{what}: {text:?} is not a duration (like 30s): {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse_or_name_their_setting() {
        assert_eq!(parse_bytes("memory", "64MiB"), Ok(64 << 20));
        assert_eq!(
            parse_duration("timeout", "30s"),
            Ok(Duration::from_secs(30))
        );
        let err = parse_bytes("memory", "lots").unwrap_err();
        assert!(err.starts_with("memory: \"lots\" is not a size"), "{err}");
        let err = parse_duration("timeout", "soon").unwrap_err();
        assert!(
            err.starts_with("timeout: \"soon\" is not a duration"),
            "{err}"
        );
    }
}
