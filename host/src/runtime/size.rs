//! What a component may hold for this host to compile it at all.
//!
//! Compiling costs the host time and memory in proportion to the functions a component
//! defines, and a component is tiny for what it asks: a module of a million empty functions
//! (the most wasmparser accepts) is 8 MB and would take minutes and gigabytes of memory to
//! compile, in every host that loads it and in the API process that validates an upload. So
//! [`check`] counts the functions of every core module, nested ones included, from the section
//! headers alone, before anything is compiled. Toolchains are far below the limit: a Python
//! (componentize-py) or JavaScript (componentize-js) handler defines about 13,000 functions.

use wasmparser::{Parser, Payload};

use super::LoadError;

/// Functions all the core modules of one component may define together.
pub(crate) const MAX_FUNCTIONS: u64 = 100_000;

/// Refuses a component that defines more than [`MAX_FUNCTIONS`] functions.
///
/// Bytes that do not parse are left to the compiler, which reports them as
/// [`LoadError::Invalid`].
pub(crate) fn check(bytes: &[u8]) -> Result<(), LoadError> {
    let mut functions: u64 = 0;
    for payload in Parser::new(0).parse_all(bytes) {
        let Ok(payload) = payload else {
            break;
        };
        if let Payload::FunctionSection(reader) = payload {
            functions = functions.saturating_add(u64::from(reader.count()));
            if functions > MAX_FUNCTIONS {
                return Err(LoadError::TooManyFunctions {
                    found: functions,
                    limit: MAX_FUNCTIONS,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn component_of_modules(modules: usize, functions_each: usize) -> Vec<u8> {
        let module = format!(
            "(core module {})",
            "(func (result i32) (i32.const 1))".repeat(functions_each)
        );
        wat::parse_str(format!("(component {})", module.repeat(modules))).unwrap()
    }

    #[test]
    fn functions_are_counted_over_every_module_of_the_component() {
        let per_module = (MAX_FUNCTIONS / 4) as usize;
        assert!(check(&component_of_modules(4, per_module)).is_ok());
        let err = check(&component_of_modules(5, per_module)).unwrap_err();
        assert!(
            matches!(err, LoadError::TooManyFunctions { found, limit: MAX_FUNCTIONS }
                if found > MAX_FUNCTIONS),
            "{err}"
        );
    }

    #[test]
    fn bytes_that_do_not_parse_are_left_to_the_compiler() {
        assert!(check(b"\0asm\x0d\0\x01\0\x01\xff").is_ok());
    }
}
