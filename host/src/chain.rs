//! Printing an error with its causes, on one line, each once.
//!
//! The crate's errors follow one rule (STYLE.md): a variant either puts its cause in its
//! message or exposes it as its `source`, never both. An error printed with `{}` therefore
//! shows only its own layer; logs, alert messages and answers that must say why print
//! [`ErrorChain`] instead, and so does the binary, for the error `main` ends with.

use std::error::Error;
use std::fmt;

/// Displays `error: source: source of source ...`. A source whose text the layer above
/// already ends with is skipped: some errors outside this crate (the redis crate's I/O
/// errors) print their cause and also return it as their source.
pub struct ErrorChain<'a>(pub &'a (dyn Error + 'a));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut above = self.0.to_string();
        f.write_str(&above)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            let text = s.to_string();
            if !above.ends_with(&text) {
                write!(f, ": {text}")?;
            }
            above = text;
            source = s.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading handler.wasm")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn each_cause_is_printed_once_in_order() {
        let err = Outer(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no such file",
        ));
        assert_eq!(
            ErrorChain(&err).to_string(),
            "reading handler.wasm: no such file"
        );
    }

    #[derive(Debug, thiserror::Error)]
    #[error("connecting: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn a_source_the_layer_above_already_printed_is_skipped() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = Outer(std::io::Error::other(Repeats(io)));
        assert_eq!(
            ErrorChain(&err).to_string(),
            "reading handler.wasm: connecting: refused"
        );
    }
}
