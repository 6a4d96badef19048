//! Which versions of the `wasmq:job` WIT package this host runs.
//!
//! A handler names the package version it was built against in its imports
//! (`wasmq:job/context@0.1.3`, `wasmq:job/types@0.1.3`); the `handle` export is a plain function
//! of the world and carries none. [`check`] reads those names from the component's top-level
//! import section, before anything is compiled, and refuses a version outside the host's
//! compatibility unit with a message that names both. Within the unit, the linker decides: a
//! newer 0.1.x that needs nothing new links, one that needs a function this host lacks is an
//! `UnsupportedImport`.
//!
//! The compatibility unit is semver's, as `wit/job.wit` states it for 0.x: the major version, or
//! for 0.x the minor (0.1.x runs on a 0.1.y host), or for 0.0.x the exact version.

use semver::Version;
use wasmparser::{Parser, Payload};

use super::LoadError;

/// The version of `wit/job.wit` that this host implements (its `package` line).
pub(crate) const HOST: &str = "0.1.3";

/// The prefix of every import name that belongs to the `wasmq:job` package.
const PACKAGE: &str = "wasmq:job/";

/// Refuses a component whose `wasmq:job` imports are of a version this host cannot run.
///
/// Bytes that do not parse are left to the compiler, which reports them as
/// [`LoadError::Invalid`].
pub(crate) fn check(bytes: &[u8]) -> Result<(), LoadError> {
    let host = host_version();
    for name in top_level_imports(bytes) {
        let Some(interface) = name.strip_prefix(PACKAGE) else {
            continue;
        };
        // An unversioned import is not this host's package version either: the linker refuses it.
        let Some((_, found)) = interface.split_once('@') else {
            continue;
        };
        let compatible = Version::parse(found).is_ok_and(|found| compatible(&host, &found));
        if !compatible {
            return Err(LoadError::IncompatibleWit {
                found: found.to_string(),
                host: HOST.to_string(),
            });
        }
    }
    Ok(())
}

fn host_version() -> Version {
    // A constant checked by a unit test; the fallback only keeps this path free of panics.
    Version::parse(HOST).unwrap_or_else(|_| Version::new(0, 1, 0))
}

/// True when a handler built against `found` is in the host's compatibility unit.
fn compatible(host: &Version, found: &Version) -> bool {
    if host.major > 0 {
        found.major == host.major
    } else if host.minor > 0 {
        found.major == 0 && found.minor == host.minor
    } else {
        found.major == 0 && found.minor == 0 && found.patch == host.patch
    }
}

/// The names in the component's own import sections, skipping nested modules and components.
fn top_level_imports(bytes: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        let Ok(payload) = payload else {
            break;
        };
        match payload {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => match depth.checked_sub(1) {
                Some(outer) => depth = outer,
                None => break,
            },
            Payload::ComponentImportSection(reader) if depth == 0 => {
                // An import may name its interface in `implements` (`import x: a:b/c@1.0.0`).
                for import in reader.into_iter().flatten() {
                    names.extend(
                        [Some(import.name.name), import.name.implements]
                            .into_iter()
                            .flatten()
                            .map(str::to_string),
                    );
                }
            }
            _ => {}
        }
    }
    names
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn host_version_is_the_package_version_of_the_wit() {
        let wit = include_str!("../../../wit/job.wit");
        assert!(
            wit.contains(&format!("package wasmq:job@{HOST};")),
            "wit/job.wit and version::HOST disagree"
        );
        assert_eq!(host_version(), Version::parse(HOST).unwrap());
    }

    /// A handler component built against `wasmq:job@{version}`: a core module in WAT that
    /// reports progress 100 and returns the payload, embedded with the WIT of wit/job.wit under
    /// that version. `extra_import` adds a `context` function a newer WIT would have, and calls
    /// it.
    fn handler(version: &str, extra_import: bool) -> Vec<u8> {
        let mut wit = include_str!("../../../wit/job.wit").replace(
            &format!("package wasmq:job@{HOST};"),
            &format!("package wasmq:job@{version};"),
        );
        if extra_import {
            wit = wit.replace(
                "progress: func(percent: u8);",
                "progress: func(percent: u8);\n  heartbeat: func();",
            );
        }
        let context = format!("wasmq:job/context@{version}");
        let (import_extra, call_extra) = if extra_import {
            (
                format!(r#"(import "{context}" "heartbeat" (func $heartbeat))"#),
                "(call $heartbeat)",
            )
        } else {
            (String::new(), "")
        };
        // `handle` gets the job record flattened (id, queue, handler, payload as pointer and
        // length, attempt, max-attempts) and returns a pointer to the result:
        // discriminant 0 (ok) at 16, the list's pointer and length at 20 and 24.
        let wat = format!(
            r#"(module
              (import "{context}" "progress" (func $progress (param i32)))
              {import_extra}
              (memory (export "memory") 1)
              (global $heap (mut i32) (i32.const 1024))
              (func (export "cabi_realloc")
                (param $old i32) (param $old_size i32) (param $align i32) (param $size i32)
                (result i32)
                (local $ptr i32)
                (local.set $ptr
                  (i32.and
                    (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
                    (i32.sub (i32.const 0) (local.get $align))))
                (global.set $heap (i32.add (local.get $ptr) (local.get $size)))
                (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
                  (then
                    (if (i32.eq
                          (memory.grow
                            (i32.add (i32.shr_u (local.get $size) (i32.const 16)) (i32.const 1)))
                          (i32.const -1))
                      (then unreachable))))
                (local.get $ptr))
              (func (export "handle")
                (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
                (call $progress (i32.const 100))
                {call_extra}
                (i32.store8 (i32.const 16) (i32.const 0))
                (i32.store (i32.const 20) (local.get 6))
                (i32.store (i32.const 24) (local.get 7))
                (i32.const 16)))"#
        );
        // wit/job.wit under that version, beside the WASI packages of wit/deps it imports.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("job.wit"), &wit).unwrap();
        copy_dir(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit/deps"),
            &dir.path().join("deps"),
        );
        let mut resolve = wit_parser::Resolve::default();
        let (package, _) = resolve.push_dir(dir.path()).unwrap();
        let world = resolve.select_world(&[package], Some("handler")).unwrap();
        let mut module = wat::parse_str(&wat).unwrap();
        wit_component::embed_component_metadata(
            &mut module,
            &resolve,
            world,
            wit_component::StringEncoding::UTF8,
        )
        .unwrap();
        wit_component::ComponentEncoder::default()
            .module(&module)
            .unwrap()
            .validate(true)
            .encode()
            .unwrap()
    }

    fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &to.join(entry.file_name()));
            } else {
                std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
            }
        }
    }

    fn runtime() -> super::super::Runtime {
        super::super::Runtime::new(super::super::RuntimeConfig {
            pooling: false,
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn the_test_handlers_import_context_at_their_version() {
        let imports = top_level_imports(&handler("0.2.0", false));
        assert!(
            imports.contains(&"wasmq:job/context@0.2.0".to_string()),
            "{imports:?}"
        );
    }

    /// 0.1.0 is what every handler built before the `workflow` interface imports, 0.1.1 before
    /// the `wasi:http` and `wasi:config` imports, 0.1.2 before `sql` and `wasi:keyvalue`; 0.1.4
    /// is a newer 0.1 than this host's.
    #[tokio::test]
    async fn a_handler_built_against_an_older_or_newer_0_1_that_needs_nothing_new_runs() {
        let rt = runtime();
        for version in ["0.1.0", "0.1.1", "0.1.2", "0.1.4"] {
            let handler = rt.load(&handler(version, false)).unwrap();
            let job = super::super::JobInput {
                id: "job-1".into(),
                payload: b"hello".to_vec(),
                attempt: 1,
                max_attempts: 1,
                ..Default::default()
            };
            let report = rt
                .run(&handler, job, &super::super::JobLimits::default())
                .await;
            assert_eq!(
                report.outcome,
                super::super::Outcome::Ok(b"hello".to_vec()),
                "{version}"
            );
            assert_eq!(report.progress, Some(100), "{version}");
        }
    }

    #[test]
    fn a_handler_built_against_a_newer_0_1_that_needs_a_new_function_is_unsupported() {
        let err = runtime().load(&handler("0.1.5", true)).unwrap_err();
        assert!(
            matches!(err, LoadError::UnsupportedImport(_)),
            "{err}: {err:?}"
        );
    }

    #[test]
    fn handlers_built_against_an_incompatible_wit_are_refused_before_compiling() {
        let rt = runtime();
        let dir = tempfile::tempdir().unwrap();
        let cache = super::super::ArtifactCache::open(dir.path()).unwrap();
        for version in ["0.2.0", "1.0.0", "0.0.1"] {
            let err = rt
                .load_with_cache(&handler(version, false), Some(&cache))
                .unwrap_err();
            assert!(
                matches!(&err, LoadError::IncompatibleWit { found, host }
                    if found == version && host == HOST),
                "{version}: {err:?}"
            );
            assert_eq!(
                err.to_string(),
                format!(
                    "the handler was built against wasmq:job@{version}; this host implements \
                     wasmq:job@{HOST} (incompatible)"
                )
            );
        }
        assert_eq!(rt.compiles(), 0);
        let stored: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".cwasm"))
            .collect();
        assert!(stored.is_empty(), "{stored:?}");
    }

    #[test]
    fn compatibility_unit_is_the_minor_for_0x_and_the_major_after() {
        let v = |s: &str| Version::parse(s).unwrap();
        let cases = [
            ("0.1.0", "0.1.0", true),
            ("0.1.0", "0.1.7", true),
            ("0.1.3", "0.1.0", true),
            ("0.1.0", "0.2.0", false),
            ("0.1.0", "0.0.9", false),
            ("0.1.0", "1.0.0", false),
            ("1.2.0", "1.0.0", true),
            ("1.2.0", "1.9.1", true),
            ("1.2.0", "2.0.0", false),
            ("0.0.3", "0.0.3", true),
            ("0.0.3", "0.0.4", false),
        ];
        for (host, found, expected) in cases {
            assert_eq!(
                compatible(&v(host), &v(found)),
                expected,
                "host {host}, handler {found}"
            );
        }
    }
}
