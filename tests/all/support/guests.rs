//! Real guest components, built once per test run from guest-examples/.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

/// The path of the Rust example guest `name` (as named in guest-examples/rust, e.g.
/// "memory-bomb"), building all Rust guests the first time any is asked for.
pub fn rust(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let dir = repo_root().join("guest-examples/rust");
    BUILT.get_or_init(|| {
        let status = Command::new("bash")
            .arg(dir.join("build.sh"))
            .status()
            .expect("run guest-examples/rust/build.sh");
        assert!(status.success(), "building the Rust guests failed");
    });
    let path = dir
        .join("target/wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    assert!(path.exists(), "no guest component at {}", path.display());
    path
}

/// The `--handler` argument (`name=path`) that runs the Rust example guest `guest` as handler
/// `name`.
pub fn handler(name: &str, guest: &str) -> String {
    format!("{name}={}", rust(guest).display())
}

pub fn rust_bytes(name: &str) -> Vec<u8> {
    std::fs::read(rust(name)).expect("read guest component")
}

/// Runs `guest-examples/<lang>/build.sh` once per test run (it installs the language's pinned
/// toolchain when missing and rebuilds only what changed) and returns the path of the
/// component `out/<name>.wasm`. A toolchain that cannot be installed fails the tests here,
/// with the script's output above the panic: no language is skipped.
fn built_by_script(lang: &str, built: &'static OnceLock<()>, name: &str) -> PathBuf {
    let dir = repo_root().join("guest-examples").join(lang);
    built.get_or_init(|| {
        let status = Command::new("bash")
            .arg(dir.join("build.sh"))
            .status()
            .unwrap_or_else(|e| panic!("run guest-examples/{lang}/build.sh: {e}"));
        assert!(
            status.success(),
            "guest-examples/{lang}/build.sh failed ({status}); its output is above"
        );
    });
    let path = dir.join("out").join(format!("{name}.wasm"));
    assert!(path.exists(), "no guest component at {}", path.display());
    path
}

/// The Python example handler `name` (guest-examples/python/<name>.py), built with
/// componentize-py.
pub fn python(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    built_by_script("python", &BUILT, name)
}

/// The JavaScript example handler `name` (guest-examples/javascript/<name>.js), built with
/// componentize-js.
pub fn javascript(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    built_by_script("javascript", &BUILT, name)
}

/// The C example handler `name` (guest-examples/c/<name>.c), built with clang, wit-bindgen and
/// wasm-tools.
pub fn c(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    built_by_script("c", &BUILT, name)
}
