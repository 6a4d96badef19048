//! Key-value buckets (`wasi:keyvalue`): the grant, its quotas, and the store behind it.
//!
//! A handler version granted `--kv cache` may open bucket `cache`; each handler has its own
//! buckets (two handlers' `cache` are different buckets), kept by a [`KvStore`]: on a worker,
//! the Redis it takes jobs from (`queue::kv`); under `wasmq exec`, memory ([`MemoryKv`]).
//! Quotas are checked by the store, atomically with the write, so concurrent jobs cannot
//! overshoot them together.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::runtime::BoxFuture;

/// Most bytes of one key.
pub const MAX_KEY_BYTES: usize = 1024;
/// Most keys of one batch call.
pub const MAX_BATCH_KEYS: usize = 1000;
/// Most keys one `list-keys` call returns.
pub const LIST_PAGE: usize = 100;
/// Most bucket grants of one handler version.
pub const MAX_BUCKETS: usize = 64;
/// Most key-value calls of one attempt.
pub const MAX_CALLS_PER_ATTEMPT: u32 = 10_000;

/// One bucket's quotas and expiry, as granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketLimits {
    /// Entries expire this long after their last write; none: never.
    pub ttl: Option<Duration>,
    /// Most keys in the bucket.
    pub max_keys: u64,
    /// Most bytes of keys and values together in the bucket.
    pub max_bytes: u64,
    /// Most bytes of one value.
    pub max_value: u64,
}

impl Default for BucketLimits {
    fn default() -> Self {
        Self {
            ttl: None,
            max_keys: 100_000,
            max_bytes: 64 * 1024 * 1024,
            max_value: 1024 * 1024,
        }
    }
}

/// The options `--kv NAME:OPTION=VALUE:...` takes.
pub const KV_OPTION_NAMES: &str = "ttl=DURATION, max_keys=N, max_bytes=SIZE, max_value=SIZE";

/// A bucket granted to a handler version: `cache`, or `cache:ttl=7d:max_keys=1000`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketGrant {
    pub name: String,
    pub limits: BucketLimits,
}

/// A bucket name: 1-64 letters, digits, `_`, `-` and `.`.
pub fn validate_bucket_name(name: &str) -> Result<(), String> {
    if !super::is_plain_name(name, 64) {
        return Err(format!(
            "kv bucket {name:?}: 1-64 letters, digits, '_', '-' or '.'"
        ));
    }
    Ok(())
}

impl BucketGrant {
    /// Parses `NAME[:OPTION=VALUE]...` (the `--kv` flag, and each entry of TOML `kv`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = text.split(':');
        let name = parts.next().unwrap_or_default();
        validate_bucket_name(name)?;
        let mut limits = BucketLimits::default();
        for option in parts {
            let (key, value) = option.split_once('=').ok_or_else(|| {
                format!(
                    "kv bucket {name}: option {option:?} is not OPTION=VALUE ({KV_OPTION_NAMES})"
                )
            })?;
            let bad = |what: &str| format!("kv bucket {name}: {key}={value:?} is not {what}");
            let size = || {
                value
                    .parse::<bytesize::ByteSize>()
                    .map(|b| b.as_u64())
                    .map_err(|_| bad("a size (like 1MiB)"))
            };
            match key {
                "ttl" => {
                    let ttl = humantime::parse_duration(value)
                        .map_err(|_| bad("a duration (like 7d)"))?;
                    if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(10 * 365 * 86400) {
                        return Err(format!("kv bucket {name}: ttl must be 1s to 10 years"));
                    }
                    limits.ttl = Some(ttl);
                }
                "max_keys" => {
                    limits.max_keys = value.parse().map_err(|_| bad("a count"))?;
                    if !(1..=100_000_000).contains(&limits.max_keys) {
                        return Err(format!("kv bucket {name}: max_keys must be 1..=100000000"));
                    }
                }
                "max_bytes" => {
                    limits.max_bytes = size()?;
                    if !(1..=(1u64 << 40)).contains(&limits.max_bytes) {
                        return Err(format!("kv bucket {name}: max_bytes must be 1B..=1TiB"));
                    }
                }
                "max_value" => {
                    limits.max_value = size()?;
                    if !(1..=(64u64 << 20)).contains(&limits.max_value) {
                        return Err(format!("kv bucket {name}: max_value must be 1B..=64MiB"));
                    }
                }
                _ => {
                    return Err(format!(
                        "kv bucket {name}: unknown option {key:?} ({KV_OPTION_NAMES})"
                    ));
                }
            }
        }
        Ok(Self {
            name: name.to_string(),
            limits,
        })
    }

    /// Parses every grant, refusing a bucket named twice.
    pub fn parse_all<S: AsRef<str>>(items: &[S]) -> Result<Vec<Self>, String> {
        if items.len() > MAX_BUCKETS {
            return Err(format!(
                "at most {MAX_BUCKETS} kv buckets, got {}",
                items.len()
            ));
        }
        let mut grants: Vec<Self> = Vec::new();
        for item in items {
            let grant = Self::parse(item.as_ref())?;
            if grants.iter().any(|g| g.name == grant.name) {
                return Err(format!("kv bucket {:?} is granted twice", grant.name));
            }
            grants.push(grant);
        }
        Ok(grants)
    }
}

/// Which bucket a call is for: the handler that owns it, its name and its limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketRef {
    pub handler: String,
    pub name: String,
    pub limits: BucketLimits,
}

/// Why a key-value call failed, as the guest is told (`other(...)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvError {
    /// The call is refused by a limit: a value, key or batch too large, a quota reached.
    Refused(String),
    /// The value is not what the call needs (`increment` of a value that is not a number).
    Invalid(String),
    /// The store could not be reached, or answered what it should not.
    Unavailable(String),
}

impl std::fmt::Display for KvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KvError::Refused(m) | KvError::Invalid(m) => f.write_str(m),
            KvError::Unavailable(m) => write!(f, "key-value store unavailable: {m}"),
        }
    }
}

impl std::error::Error for KvError {}

/// A page of keys and the cursor of the next one (none: the last page).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPage {
    pub keys: Vec<String>,
    pub cursor: Option<u64>,
}

/// Where buckets live. Every call is atomic: a quota is checked with the write it limits.
pub trait KvStore: Send + Sync {
    fn get(
        &self,
        bucket: &BucketRef,
        key: String,
    ) -> BoxFuture<'_, Result<Option<Vec<u8>>, KvError>>;
    fn get_many(
        &self,
        bucket: &BucketRef,
        keys: Vec<String>,
    ) -> BoxFuture<'_, Result<Vec<Option<Vec<u8>>>, KvError>>;
    /// Sets every pair, or none of them when one would pass a quota.
    fn set_many(
        &self,
        bucket: &BucketRef,
        pairs: Vec<(String, Vec<u8>)>,
    ) -> BoxFuture<'_, Result<(), KvError>>;
    fn delete_many(
        &self,
        bucket: &BucketRef,
        keys: Vec<String>,
    ) -> BoxFuture<'_, Result<(), KvError>>;
    fn increment(
        &self,
        bucket: &BucketRef,
        key: String,
        delta: u64,
    ) -> BoxFuture<'_, Result<u64, KvError>>;
    fn list_keys(
        &self,
        bucket: &BucketRef,
        cursor: Option<u64>,
    ) -> BoxFuture<'_, Result<KeyPage, KvError>>;
}

/// Checks a key before it is sent to the store.
pub fn check_key(key: &str) -> Result<(), KvError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(KvError::Refused(format!(
            "a key is 1 to {MAX_KEY_BYTES} bytes, got {}",
            key.len()
        )));
    }
    Ok(())
}

/// The value a decimal counter holds after adding `delta`, or why it cannot.
pub fn add_to_counter(current: Option<&[u8]>, delta: u64) -> Result<u64, KvError> {
    let now = match current {
        None => 0,
        Some(bytes) => std::str::from_utf8(bytes)
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| {
                KvError::Invalid("increment: the value is not a decimal number".to_string())
            })?,
    };
    now.checked_add(delta)
        .filter(|n| i64::try_from(*n).is_ok())
        .ok_or_else(|| KvError::Invalid("increment: the counter would pass 2^63-1".to_string()))
}

/// Buckets in this process's memory: for `wasmq exec` and tests. Same quotas and expiry as
/// the Redis store; gone when the process ends.
#[derive(Default)]
pub struct MemoryKv {
    buckets: Mutex<BTreeMap<(String, String), Entries>>,
}

/// One bucket in memory: each key's value and when it expires.
type Entries = BTreeMap<String, (Vec<u8>, Option<Instant>)>;

impl MemoryKv {
    fn with<T>(&self, bucket: &BucketRef, f: impl FnOnce(&mut Entries) -> T) -> T {
        let mut all = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let entries = all
            .entry((bucket.handler.clone(), bucket.name.clone()))
            .or_default();
        let now = Instant::now();
        entries.retain(|_, (_, expires)| expires.is_none_or(|at| at > now));
        f(entries)
    }
}

fn used_bytes(entries: &Entries) -> u64 {
    entries
        .iter()
        .map(|(k, (v, _))| (k.len() + v.len()) as u64)
        .sum()
}

/// Checks that writing `pairs` keeps `entries` within `limits`.
fn within_quota(
    entries: &Entries,
    pairs: &[(String, Vec<u8>)],
    limits: &BucketLimits,
) -> Result<(), KvError> {
    let mut keys = entries.len() as u64;
    let mut bytes = used_bytes(entries);
    let mut seen = std::collections::BTreeSet::new();
    for (key, value) in pairs {
        if value.len() as u64 > limits.max_value {
            return Err(quota_value(value.len() as u64, limits));
        }
        if let Some((old, _)) = entries.get(key).filter(|_| seen.insert(key.clone())) {
            bytes -= (key.len() + old.len()) as u64;
        } else if !entries.contains_key(key) && seen.insert(key.clone()) {
            keys += 1;
        }
        bytes += (key.len() + value.len()) as u64;
    }
    if keys > limits.max_keys {
        return Err(KvError::Refused(format!(
            "bucket quota: at most {} keys",
            limits.max_keys
        )));
    }
    if bytes > limits.max_bytes {
        return Err(KvError::Refused(format!(
            "bucket quota: at most {} bytes of keys and values",
            limits.max_bytes
        )));
    }
    Ok(())
}

pub(crate) fn quota_value(len: u64, limits: &BucketLimits) -> KvError {
    KvError::Refused(format!(
        "a value is at most {} bytes, got {len}",
        limits.max_value
    ))
}

impl KvStore for MemoryKv {
    fn get(
        &self,
        bucket: &BucketRef,
        key: String,
    ) -> BoxFuture<'_, Result<Option<Vec<u8>>, KvError>> {
        let value = self.with(bucket, |e| e.get(&key).map(|(v, _)| v.clone()));
        Box::pin(async move { Ok(value) })
    }

    fn get_many(
        &self,
        bucket: &BucketRef,
        keys: Vec<String>,
    ) -> BoxFuture<'_, Result<Vec<Option<Vec<u8>>>, KvError>> {
        let values = self.with(bucket, |e| {
            keys.iter()
                .map(|k| e.get(k).map(|(v, _)| v.clone()))
                .collect()
        });
        Box::pin(async move { Ok(values) })
    }

    fn set_many(
        &self,
        bucket: &BucketRef,
        pairs: Vec<(String, Vec<u8>)>,
    ) -> BoxFuture<'_, Result<(), KvError>> {
        let limits = bucket.limits;
        let result = self.with(bucket, |e| {
            within_quota(e, &pairs, &limits)?;
            let expires = limits.ttl.map(|ttl| Instant::now() + ttl);
            for (k, v) in pairs {
                e.insert(k, (v, expires));
            }
            Ok(())
        });
        Box::pin(async move { result })
    }

    fn delete_many(
        &self,
        bucket: &BucketRef,
        keys: Vec<String>,
    ) -> BoxFuture<'_, Result<(), KvError>> {
        self.with(bucket, |e| {
            for k in &keys {
                e.remove(k);
            }
        });
        Box::pin(async move { Ok(()) })
    }

    fn increment(
        &self,
        bucket: &BucketRef,
        key: String,
        delta: u64,
    ) -> BoxFuture<'_, Result<u64, KvError>> {
        let limits = bucket.limits;
        let result = self.with(bucket, |e| {
            let next = add_to_counter(e.get(&key).map(|(v, _)| v.as_slice()), delta)?;
            let pair = (key.clone(), next.to_string().into_bytes());
            within_quota(e, std::slice::from_ref(&pair), &limits)?;
            e.insert(pair.0, (pair.1, limits.ttl.map(|ttl| Instant::now() + ttl)));
            Ok(next)
        });
        Box::pin(async move { result })
    }

    fn list_keys(
        &self,
        bucket: &BucketRef,
        cursor: Option<u64>,
    ) -> BoxFuture<'_, Result<KeyPage, KvError>> {
        let skip = cursor.unwrap_or(0) as usize;
        let page = self.with(bucket, |e| {
            let keys: Vec<String> = e.keys().skip(skip).take(LIST_PAGE).cloned().collect();
            let next = skip + keys.len();
            KeyPage {
                cursor: (next < e.len()).then_some(next as u64),
                keys,
            }
        });
        Box::pin(async move { Ok(page) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_parse_options_and_refuse_bad_ones() {
        let g = BucketGrant::parse("cache").unwrap();
        assert_eq!(g.name, "cache");
        assert_eq!(g.limits, BucketLimits::default());
        let g =
            BucketGrant::parse("marks:ttl=7d:max_keys=10:max_bytes=1KiB:max_value=100B").unwrap();
        assert_eq!(g.limits.ttl, Some(Duration::from_secs(7 * 86400)));
        assert_eq!(g.limits.max_keys, 10);
        assert_eq!(g.limits.max_bytes, 1024);
        assert_eq!(g.limits.max_value, 100);
        for bad in [
            "",
            "a b",
            "cache:ttl",
            "cache:ttl=soon",
            "cache:color=red",
            "cache:max_keys=0",
            "x/y",
        ] {
            assert!(BucketGrant::parse(bad).is_err(), "{bad}");
        }
        assert!(
            BucketGrant::parse_all(&["a", "a:ttl=1h"])
                .unwrap_err()
                .contains("twice")
        );
    }

    #[test]
    fn counters_refuse_what_is_not_a_number_and_overflow() {
        assert_eq!(add_to_counter(None, 5).unwrap(), 5);
        assert_eq!(add_to_counter(Some(b"41"), 1).unwrap(), 42);
        assert!(matches!(
            add_to_counter(Some(b"x"), 1),
            Err(KvError::Invalid(_))
        ));
        assert!(matches!(
            add_to_counter(Some(b"-1"), 1),
            Err(KvError::Invalid(_))
        ));
        assert!(add_to_counter(Some(i64::MAX.to_string().as_bytes()), 1).is_err());
    }

    #[tokio::test]
    async fn memory_store_keeps_quotas_and_separates_handlers() {
        let kv = MemoryKv::default();
        let limits = BucketLimits {
            max_keys: 2,
            ..BucketLimits::default()
        };
        let a = BucketRef {
            handler: "a".into(),
            name: "cache".into(),
            limits,
        };
        let b = BucketRef {
            handler: "b".into(),
            ..a.clone()
        };
        kv.set_many(
            &a,
            vec![("k1".into(), b"1".to_vec()), ("k2".into(), b"2".to_vec())],
        )
        .await
        .unwrap();
        let over = kv.set_many(&a, vec![("k3".into(), b"3".to_vec())]).await;
        assert!(matches!(over, Err(KvError::Refused(m)) if m.contains("2 keys")));
        // Overwriting a key adds none.
        kv.set_many(&a, vec![("k1".into(), b"one".to_vec())])
            .await
            .unwrap();
        assert_eq!(kv.get(&b, "k1".into()).await.unwrap(), None);
        assert_eq!(
            kv.get(&a, "k1".into()).await.unwrap(),
            Some(b"one".to_vec())
        );
    }
}
