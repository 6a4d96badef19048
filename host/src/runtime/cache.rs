//! The on-disk cache of compiled handlers, so a host restart does not compile them again.
//!
//! Owns: [`ArtifactCache`], a directory of artifacts (`Component::serialize` output), one file per
//! component and engine, named `<sha256 of the component>-<engine fingerprint>.cwasm`. The
//! engine fingerprint hashes what decides whether compiled code fits an engine: the wasmtime
//! version, the target and `Engine::precompile_compatibility_hash` (compiler flags, tunables
//! such as fuel and epochs, wasm features). A host with another configuration looks up other
//! names, so hosts of different configurations can share a directory.
//!
//! Deserializing compiled code runs it as machine code, so only artifacts this host wrote are
//! ever deserialized. The directory (owned by this host's user, not writable by others) holds a
//! random 32-byte secret (`key`, this user's, mode 0600, made on first use); every artifact carries an HMAC-SHA256 over its name and its content under that
//! secret, checked before deserializing. An artifact that fails the check (truncated, corrupt,
//! written under another secret) or that wasmtime refuses is deleted, logged and compiled again.
//!
//! Writes go to a temporary file in the directory, renamed into place: a reader, another host
//! sharing the directory, or a crash mid-write never sees half a file. The cache is never
//! needed for a load to succeed: an artifact that cannot be written (read-only or full disk) is
//! logged, and the handler runs from the compiled code in memory.

use std::hash::{Hash, Hasher};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use rand::TryRngCore;
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

type HmacSha256 = Hmac<Sha256>;

/// The wasmtime release compiled into this host (pinned with `=` in host/Cargo.toml; a unit test
/// checks it against Cargo.lock).
const WASMTIME_VERSION: &str = "48.0.8";

/// The start of every artifact file: the format of what follows (tag, then wasmtime's bytes).
const MAGIC: &[u8; 8] = b"wasmqa\x00\x01";
const TAG_LEN: usize = 32;
const SECRET_LEN: usize = 32;
const SECRET_FILE: &str = "key";
const TEMP_PREFIX: &str = ".tmp-";
/// A temporary file older than this was left by a crash, not by a write in progress.
const STALE_TEMP: Duration = Duration::from_secs(3600);

/// A directory of compiled handlers that this host (or a host sharing its secret) wrote.
///
/// Open it once at start and pass it to [`Runtime::load_with_cache`](super::Runtime::load_with_cache)
/// for every handler. If [`ArtifactCache::open`] fails (say the directory cannot be created),
/// log the error and load with no cache: nothing but startup time depends on it.
pub struct ArtifactCache {
    dir: PathBuf,
    /// HMAC-SHA256 keyed with the directory's secret, cloned for each artifact.
    mac: HmacSha256,
}

impl std::fmt::Debug for ArtifactCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactCache")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Why an [`ArtifactCache`] could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    #[error("artifact cache: {action} {path}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    /// The directory or its secret can be written (or the secret read) by other users, who
    /// could then make this host run code of their choosing.
    #[error("artifact cache: {path} is {problem}; refusing to trust artifacts in it")]
    Insecure { path: String, problem: &'static str },
    #[error("artifact cache: no random bytes for the cache secret: {0}")]
    Random(String),
}

impl CacheError {
    fn io(action: &'static str, path: &Path, source: io::Error) -> Self {
        CacheError::Io {
            action,
            path: path.display().to_string(),
            source,
        }
    }
}

/// Where a cached component lives: its name says which component and which engine.
pub(crate) struct Key {
    file_name: String,
}

/// What the cache held for a key.
pub(crate) enum Lookup {
    Hit(Component),
    Miss,
    /// There was an artifact, and it was refused (and deleted) for this reason.
    Discarded(String),
}

impl ArtifactCache {
    /// Opens the cache in `dir`, creating the directory (mode 0700) and its secret (mode 0600)
    /// if they are missing.
    ///
    /// Refuses a directory or secret that other users can write, a secret they can read, and
    /// a directory or secret another user owns (its owner could change them at will).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, CacheError> {
        let dir = dir.as_ref().to_path_buf();
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(&dir)
            .map_err(|e| CacheError::io("creating", &dir, e))?;
        let meta = std::fs::metadata(&dir).map_err(|e| CacheError::io("reading", &dir, e))?;
        if !meta.is_dir() {
            return Err(CacheError::io(
                "opening",
                &dir,
                io::Error::other("not a directory"),
            ));
        }
        if writable_by_others(&meta) {
            return Err(CacheError::Insecure {
                path: dir.display().to_string(),
                problem: "writable by other users",
            });
        }
        if owned_by_another_user(&meta) {
            return Err(CacheError::Insecure {
                path: dir.display().to_string(),
                problem: "owned by another user, who could replace its secret and artifacts",
            });
        }
        let secret = load_or_create_secret(&dir)?;
        let mac = <HmacSha256 as Mac>::new_from_slice(&secret)
            .map_err(|e| CacheError::io("keying", &dir.join(SECRET_FILE), io::Error::other(e)))?;
        remove_stale_temp_files(&dir);
        Ok(Self { dir, mac })
    }

    /// The directory the cache lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key of `component` (its bytes) compiled by an engine of `fingerprint`.
    pub(crate) fn key(&self, component: &[u8], fingerprint: &str) -> Key {
        Key {
            file_name: format!("{}-{fingerprint}.cwasm", hex(&Sha256::digest(component))),
        }
    }

    /// The artifact at `key`, if this host wrote it and `engine` accepts it. Anything else found
    /// there is deleted and reported as [`Lookup::Discarded`].
    pub(crate) fn get(&self, engine: &Engine, key: &Key) -> Lookup {
        let path = self.dir.join(&key.file_name);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Lookup::Miss,
            Err(e) => return self.discard(&path, format!("could not be read: {e}")),
        };
        let Some(code) = self.verify(key, &bytes) else {
            return self.discard(
                &path,
                "failed its integrity check (truncated, corrupt, or not written by this host)"
                    .to_string(),
            );
        };
        match deserialize(engine, code) {
            Ok(component) => Lookup::Hit(component),
            Err(e) => self.discard(&path, format!("was refused by wasmtime: {e:#}")),
        }
    }

    /// Stores `component` at `key`. Never fails the load: a write error is logged, and the
    /// handler runs from memory.
    pub(crate) fn put(&self, key: &Key, component: &Component) {
        let path = self.dir.join(&key.file_name);
        match self.store(key, component) {
            Ok(()) => tracing::debug!(path = %path.display(), "artifact cache: stored"),
            Err(e) => tracing::warn!(path = %path.display(), error = %e,
                "artifact cache: could not store a compiled handler; the handler runs from \
                 memory and compiles again at the next start"),
        }
    }

    /// Stores `component` at `key`, or says why it could not: what the compiler process
    /// (`compile.rs`) does, whose only output is the artifact.
    pub(crate) fn store(&self, key: &Key, component: &Component) -> Result<(), String> {
        let path = self.dir.join(&key.file_name);
        let code = component
            .serialize()
            .map_err(|e| format!("serializing: {e:#}"))?;
        let tag = self.tag(key, &code);
        tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(&self.dir)
            .and_then(|mut file| {
                file.write_all(MAGIC)?;
                file.write_all(&tag)?;
                file.write_all(&code)?;
                // No fsync: a file cut short by a power loss fails its tag and is recompiled.
                file.persist(&path).map_err(|e| e.error)?;
                Ok(())
            })
            .map_err(|e| format!("writing {}: {e}", path.display()))
    }

    /// The compiled code in `file`, if its tag proves this host wrote it for `key`.
    fn verify<'a>(&self, key: &Key, file: &'a [u8]) -> Option<&'a [u8]> {
        let rest = file.strip_prefix(MAGIC.as_slice())?;
        if rest.len() < TAG_LEN {
            return None;
        }
        let (tag, code) = rest.split_at(TAG_LEN);
        self.mac(key, code).verify_slice(tag).ok()?;
        Some(code)
    }

    fn tag(&self, key: &Key, code: &[u8]) -> [u8; TAG_LEN] {
        self.mac(key, code).finalize().into_bytes().into()
    }

    /// The HMAC of an artifact: over the format, the name (which component, which engine) and
    /// the code, so that neither a file's content nor its name can be swapped for another's.
    fn mac(&self, key: &Key, code: &[u8]) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(MAGIC);
        mac.update(key.file_name.as_bytes());
        mac.update(&[0]);
        mac.update(code);
        mac
    }

    fn discard(&self, path: &Path, reason: String) -> Lookup {
        tracing::warn!(path = %path.display(), %reason,
            "artifact cache: discarding a cached handler; compiling it again");
        if let Err(e) = std::fs::remove_file(path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e,
                "artifact cache: could not delete a discarded artifact");
        }
        Lookup::Discarded(format!("the cached artifact {reason}"))
    }
}

/// Deserializes compiled code that [`ArtifactCache::verify`] has authenticated.
///
/// One of the two places wasmq uses `unsafe` (the other: `runtime/returned.rs`).
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, code: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `Component::deserialize` requires bytes produced by `Component::serialize` (or
    // `Engine::precompile_component`) of a compatible wasmtime, because it maps them as
    // executable code and trusts their metadata. `code` is exactly the bytes whose HMAC-SHA256
    // `ArtifactCache::verify` checked in memory (no file is read again in between), under a
    // 32-byte secret that only this host's user can read (`ArtifactCache::open` refuses a
    // secret or directory others can write or read). Only `ArtifactCache::put` makes such a
    // tag, and only over the output of `Component::serialize` on this host. The tag also
    // covers the file name, which carries the engine fingerprint (wasmtime version, target,
    // `precompile_compatibility_hash`), so the bytes come from an engine compatible with
    // `engine`; wasmtime checks its own version and settings header again on top.
    unsafe { Component::deserialize(engine, code) }
}

/// A short hex digest of everything that decides whether compiled code fits `engine`.
pub(crate) fn engine_fingerprint(engine: &Engine) -> String {
    let mut hasher = Sha256Hasher(Sha256::new());
    WASMTIME_VERSION.hash(&mut hasher);
    std::env::consts::ARCH.hash(&mut hasher);
    std::env::consts::OS.hash(&mut hasher);
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex(&hasher.0.finalize()[..8])
}

/// Feeds `Hash` implementations into SHA-256, whose output, unlike `DefaultHasher`'s, is
/// fixed across Rust releases.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        digest[..8]
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Reads the cache's secret, or makes one if there is none. Two hosts starting at once on an
/// empty directory agree on one secret: it is linked into place only if no other is there.
fn load_or_create_secret(dir: &Path) -> Result<[u8; SECRET_LEN], CacheError> {
    let path = dir.join(SECRET_FILE);
    for _ in 0..3 {
        if let Some(secret) = read_secret(&path)? {
            return Ok(secret);
        }
        let mut secret = [0u8; SECRET_LEN];
        rand::rngs::OsRng
            .try_fill_bytes(&mut secret)
            .map_err(|e| CacheError::Random(e.to_string()))?;
        // tempfile makes its files 0600.
        let mut file = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(dir)
            .map_err(|e| CacheError::io("creating a file in", dir, e))?;
        file.write_all(&secret)
            .and_then(|()| file.as_file().sync_all())
            .map_err(|e| CacheError::io("writing", file.path(), e))?;
        match file.persist_noclobber(&path) {
            Ok(_) => {
                tracing::info!(path = %path.display(), "artifact cache: made a new secret");
                return Ok(secret);
            }
            // Another host made one first: read theirs.
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(CacheError::io("writing", &path, e.error)),
        }
    }
    Err(CacheError::io(
        "creating",
        &path,
        io::Error::other("the secret kept changing while it was being read"),
    ))
}

/// The secret in `path`; `None` when there is none, or it was damaged (then it is deleted, and
/// every artifact made under it will be recompiled).
fn read_secret(path: &Path) -> Result<Option<[u8; SECRET_LEN]>, CacheError> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CacheError::io("opening", path, e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| CacheError::io("reading", path, e))?;
    if accessible_by_others(&meta) {
        return Err(CacheError::Insecure {
            path: path.display().to_string(),
            problem: "readable or writable by other users (it must be mode 0600)",
        });
    }
    if owned_by_another_user(&meta) {
        return Err(CacheError::Insecure {
            path: path.display().to_string(),
            problem: "owned by another user, who can read and change it",
        });
    }
    let mut bytes = Vec::with_capacity(SECRET_LEN + 1);
    Read::by_ref(&mut file)
        .take(SECRET_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| CacheError::io("reading", path, e))?;
    match <[u8; SECRET_LEN]>::try_from(bytes.as_slice()) {
        Ok(secret) => Ok(Some(secret)),
        Err(_) => {
            tracing::warn!(path = %path.display(), len = bytes.len(),
                "artifact cache: the secret is damaged; making a new one (cached handlers \
                 will compile again)");
            match std::fs::remove_file(path) {
                Ok(()) => Ok(None),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(CacheError::io("deleting", path, e)),
            }
        }
    }
}

/// Removes temporary files that a crash left behind (recent ones may be a write in progress by
/// another host sharing the directory).
fn remove_stale_temp_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            continue;
        }
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|modified| now.duration_since(modified).ok())
            .is_some_and(|age| age > STALE_TEMP);
        if stale {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(unix)]
fn writable_by_others(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o022 != 0
}

#[cfg(unix)]
fn accessible_by_others(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o077 != 0
}

/// Whether the file's owner is not the user this process runs as (root included: root must not
/// load native code signed with a key another user can change).
#[cfg(unix)]
fn owned_by_another_user(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    meta.uid() != rustix::process::geteuid().as_raw()
}

#[cfg(not(unix))]
fn owned_by_another_user(_meta: &std::fs::Metadata) -> bool {
    false
}

#[cfg(not(unix))]
fn writable_by_others(_meta: &std::fs::Metadata) -> bool {
    false
}

#[cfg(not(unix))]
fn accessible_by_others(_meta: &std::fs::Metadata) -> bool {
    false
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn wasmtime_version_is_the_one_in_cargo_lock() {
        let lock = include_str!("../../../Cargo.lock");
        assert!(
            lock.contains(&format!(
                "name = \"wasmtime\"\nversion = \"{WASMTIME_VERSION}\"\n"
            )),
            "update cache::WASMTIME_VERSION to the wasmtime in Cargo.lock"
        );
    }

    #[test]
    fn open_creates_a_private_directory_and_secret_and_keeps_the_secret() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        let cache = ArtifactCache::open(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(SECRET_FILE)), 0o600);
        let again = ArtifactCache::open(&dir).unwrap();
        let key = cache.key(b"component", "0123456789abcdef");
        assert_eq!(cache.tag(&key, b"code"), again.tag(&key, b"code"));
    }

    #[test]
    fn open_refuses_a_secret_others_can_read() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        ArtifactCache::open(tmp.path()).unwrap();
        let key = tmp.path().join(SECRET_FILE);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            ArtifactCache::open(tmp.path()),
            Err(CacheError::Insecure { .. })
        ));
    }

    #[test]
    fn open_refuses_a_directory_others_can_write() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            ArtifactCache::open(tmp.path()),
            Err(CacheError::Insecure { .. })
        ));
    }

    /// A directory of another user's: one made and given away (as root, as the tests run in
    /// CI), or else `/`, which root owns.
    fn someone_elses_directory(tmp: &Path) -> PathBuf {
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(tmp, Some(65534), Some(65534)).unwrap();
            tmp.to_path_buf()
        } else {
            PathBuf::from("/")
        }
    }

    #[test]
    fn open_refuses_a_directory_or_secret_owned_by_another_user() {
        let tmp = tempfile::tempdir().unwrap();
        let theirs = someone_elses_directory(tmp.path());
        let err = ArtifactCache::open(&theirs).unwrap_err();
        assert!(err.to_string().contains("owned by another user"), "{err}");
        if rustix::process::geteuid().is_root() {
            let tmp = tempfile::tempdir().unwrap();
            ArtifactCache::open(tmp.path()).unwrap();
            let key = tmp.path().join(SECRET_FILE);
            std::os::unix::fs::chown(&key, Some(65534), Some(65534)).unwrap();
            let err = ArtifactCache::open(tmp.path()).unwrap_err();
            assert!(
                err.to_string().contains(&key.display().to_string()),
                "{err}"
            );
            assert!(err.to_string().contains("owned by another user"), "{err}");
        }
    }

    #[test]
    fn a_damaged_secret_is_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let first = ArtifactCache::open(tmp.path()).unwrap();
        std::fs::write(tmp.path().join(SECRET_FILE), b"short").unwrap();
        let second = ArtifactCache::open(tmp.path()).unwrap();
        let key = first.key(b"component", "0123456789abcdef");
        assert_ne!(first.tag(&key, b"code"), second.tag(&key, b"code"));
    }

    #[test]
    fn tags_bind_content_and_name() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::open(tmp.path()).unwrap();
        let a = cache.key(b"component a", "0123456789abcdef");
        let b = cache.key(b"component b", "0123456789abcdef");
        let mut file = MAGIC.to_vec();
        file.extend_from_slice(&cache.tag(&a, b"code"));
        file.extend_from_slice(b"code");
        assert_eq!(cache.verify(&a, &file), Some(&b"code"[..]));
        assert_eq!(cache.verify(&b, &file), None, "another name");
        let last = file.len() - 1;
        file[last] ^= 1;
        assert_eq!(cache.verify(&a, &file), None, "another content");
        assert_eq!(
            cache.verify(&a, &file[..MAGIC.len() + 10]),
            None,
            "truncated"
        );
    }
}
