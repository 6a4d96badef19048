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

pub fn rust_bytes(name: &str) -> Vec<u8> {
    std::fs::read(rust(name)).expect("read guest component")
}
