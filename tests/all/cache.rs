//! The on-disk artifact cache, driven through real components: a restart with a warm cache
//! compiles nothing and runs jobs; anything in the cache this host did not write, or that is
//! damaged, is discarded and compiled again; a cache that cannot be written never fails a load.

use std::path::{Path, PathBuf};
use std::time::Duration;

use wasmq::{ArtifactCache, JobInput, JobLimits, LoadSource, Outcome, Runtime, RuntimeConfig};

use crate::support::guests;

/// A fresh runtime, as a host makes at start: every "restart" below builds a new one.
fn runtime(fuel: bool) -> Runtime {
    Runtime::new(RuntimeConfig {
        fuel,
        max_instances: 4,
        ..RuntimeConfig::default()
    })
    .unwrap()
}

fn echo() -> Vec<u8> {
    guests::rust_bytes("echo")
}

/// Loads `bytes` through `cache` on `rt`, runs one echo job and checks it succeeded.
async fn load_and_run(rt: &Runtime, bytes: &[u8], cache: &ArtifactCache) -> LoadSource {
    let (handler, source) = rt.load_with_cache(bytes, Some(cache)).unwrap();
    let job = JobInput {
        id: "job-1".into(),
        queue: "default".into(),
        handler: "echo".into(),
        payload: b"from the cache".to_vec(),
        attempt: 1,
        max_attempts: 1,
    };
    let limits = JobLimits {
        timeout: Duration::from_secs(5),
        memory: 64 * 1024 * 1024,
        fuel: None,
    };
    let report = rt.run(&handler, job, &limits).await;
    assert_eq!(report.outcome, Outcome::Ok(b"from the cache".to_vec()));
    source
}

/// The artifact files in the cache directory.
fn artifacts(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    files.sort();
    files
}

/// A cache directory holding the echo artifact, written by a first host start.
fn warm_cache() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let cache = ArtifactCache::open(dir.path()).unwrap();
    let rt = runtime(false);
    let (_, source) = rt.load_with_cache(&echo(), Some(&cache)).unwrap();
    assert_eq!(source, LoadSource::Compiled);
    let files = artifacts(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let artifact = files[0].clone();
    (dir, artifact)
}

#[tokio::test]
async fn a_restart_with_a_warm_cache_compiles_nothing_and_runs_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = echo();

    let cold = runtime(false);
    let cache = ArtifactCache::open(dir.path()).unwrap();
    assert_eq!(
        load_and_run(&cold, &bytes, &cache).await,
        LoadSource::Compiled
    );
    assert_eq!(cold.compiles(), 1);
    assert_eq!(artifacts(dir.path()).len(), 1);

    // A restart: a new runtime, the cache opened again from disk.
    let warm = runtime(false);
    let cache = ArtifactCache::open(dir.path()).unwrap();
    assert_eq!(
        load_and_run(&warm, &bytes, &cache).await,
        LoadSource::Cached
    );
    assert_eq!(warm.compiles(), 0);
}

#[tokio::test]
async fn a_damaged_artifact_is_discarded_recompiled_rewritten_and_the_job_succeeds() {
    type Damage = fn(&mut Vec<u8>);
    let cases: &[(&str, Damage)] = &[
        ("one byte flipped in the code", |f| {
            let i = f.len() / 2;
            f[i] ^= 0x40;
        }),
        ("one byte flipped in the tag", |f| f[12] ^= 1),
        ("truncated to half", |f| f.truncate(f.len() / 2)),
        ("truncated inside the header", |f| f.truncate(10)),
        ("empty", |f| f.clear()),
        ("a byte appended", |f| f.push(0)),
    ];
    let bytes = echo();
    for (damage, apply) in cases {
        let (dir, artifact) = warm_cache();
        let mut file = std::fs::read(&artifact).unwrap();
        apply(&mut file);
        std::fs::write(&artifact, &file).unwrap();

        let rt = runtime(false);
        let cache = ArtifactCache::open(dir.path()).unwrap();
        let source = load_and_run(&rt, &bytes, &cache).await;
        assert!(
            matches!(source, LoadSource::Recompiled { .. }),
            "{damage}: {source:?}"
        );
        assert_eq!(rt.compiles(), 1, "{damage}");

        // Rewritten: the next start loads it again without compiling.
        let rt = runtime(false);
        assert_eq!(
            load_and_run(&rt, &bytes, &cache).await,
            LoadSource::Cached,
            "{damage}"
        );
        assert_eq!(rt.compiles(), 0, "{damage}");
    }
}

#[tokio::test]
async fn an_artifact_this_host_did_not_write_is_refused_and_recompiled() {
    let bytes = echo();
    let (dir, artifact) = warm_cache();
    // Valid compiled code for this very component and engine configuration, from elsewhere:
    // written by a host with another secret, and a bare wasmtime artifact.
    let (other_dir, other_artifact) = warm_cache();
    let bare = runtime_engine_artifact(&bytes);
    let foreign: [(&str, Vec<u8>); 2] = [
        (
            "another host's artifact",
            std::fs::read(&other_artifact).unwrap(),
        ),
        ("a bare wasmtime artifact", bare),
    ];
    drop(other_dir);
    for (what, content) in foreign {
        std::fs::write(&artifact, &content).unwrap();
        let rt = runtime(false);
        let cache = ArtifactCache::open(dir.path()).unwrap();
        let source = load_and_run(&rt, &bytes, &cache).await;
        assert!(
            matches!(source, LoadSource::Recompiled { .. }),
            "{what}: {source:?}"
        );
        assert_eq!(rt.compiles(), 1, "{what}");
        assert_ne!(std::fs::read(&artifact).unwrap(), content, "{what}");
    }
}

/// wasmtime's own precompiled form of the component (what `wasmtime compile` writes), with no
/// wasmq header or tag.
fn runtime_engine_artifact(bytes: &[u8]) -> Vec<u8> {
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true).epoch_interruption(true);
    let engine = wasmtime::Engine::new(&config).unwrap();
    engine.precompile_component(bytes).unwrap()
}

#[tokio::test]
async fn engines_of_different_configurations_use_different_artifacts() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ArtifactCache::open(dir.path()).unwrap();
    let bytes = echo();

    let plain = runtime(false);
    let fuel = runtime(true);
    assert_eq!(
        load_and_run(&plain, &bytes, &cache).await,
        LoadSource::Compiled
    );
    assert_eq!(
        load_and_run(&fuel, &bytes, &cache).await,
        LoadSource::Compiled
    );
    assert_eq!(artifacts(dir.path()).len(), 2);

    // Both configurations restart warm from the one shared directory.
    for fuel in [false, true] {
        let rt = runtime(fuel);
        assert_eq!(
            load_and_run(&rt, &bytes, &cache).await,
            LoadSource::Cached,
            "fuel: {fuel}"
        );
        assert_eq!(rt.compiles(), 0, "fuel: {fuel}");
    }
}

#[tokio::test]
async fn a_cache_that_cannot_be_written_does_not_fail_the_load() {
    let bytes = echo();
    let (dir, artifact) = warm_cache();
    // A directory where the artifact should be: it can be neither read, deleted nor replaced
    // (a read-only directory would do, but tests run as root, who may write anywhere).
    std::fs::remove_file(&artifact).unwrap();
    std::fs::create_dir(&artifact).unwrap();
    std::fs::write(artifact.join("keep"), b"").unwrap();

    for _ in 0..2 {
        let rt = runtime(false);
        let cache = ArtifactCache::open(dir.path()).unwrap();
        let source = load_and_run(&rt, &bytes, &cache).await;
        assert_ne!(source, LoadSource::Cached);
        assert_eq!(rt.compiles(), 1);
    }
    assert!(artifact.is_dir());
}

#[test]
fn a_cache_without_a_handler_world_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ArtifactCache::open(dir.path()).unwrap();
    let rt = runtime(false);
    let not_a_handler = wat::parse_str("(component)").unwrap();
    let err = rt
        .load_with_cache(&not_a_handler, Some(&cache))
        .unwrap_err();
    assert!(matches!(err, wasmq::LoadError::MissingExport), "{err:?}");
    assert!(artifacts(dir.path()).is_empty());
}
