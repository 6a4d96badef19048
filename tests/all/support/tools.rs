//! The Python tools of `tests/tools`, installed by `scripts/install-deps.sh` into a venv named
//! after the requirements file's hash (`pinned_venv` in guest-examples/lib.sh).

use std::path::PathBuf;

/// The venv's Python; fails the test with what to run when it is missing.
pub fn python() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let requirements = std::fs::read(root.join("tests/tools/requirements.txt"))
        .expect("read tests/tools/requirements.txt");
    let hash = wasmq::registry::sha256_hex(&requirements);
    let tools = std::env::var_os("WASMQ_TOOLS").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/wasmq/tools"),
        PathBuf::from,
    );
    let python = tools.join(format!("venv-{}/bin/python", &hash[..16]));
    assert!(
        python.exists(),
        "{} is missing: run `bash scripts/install-deps.sh` (the test command does)",
        python.display()
    );
    python
}

/// The path of a script in `tests/tools`.
pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/tools")
        .join(name)
}
