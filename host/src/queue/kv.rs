//! Key-value buckets in Redis: the [`KvStore`] a worker gives its handlers.
//!
//! A bucket is three keys under its own hash tag, so a Redis Cluster spreads buckets and every
//! call is one slot: `wasmq:kv:{<handler>/<bucket>}:v` (hash: key -> value), `:t` (sorted set:
//! every key scored by the millisecond it expires at, `+inf` for never; the index `list-keys`
//! scans) and `:n` (bytes of keys and values, for the quota). Every call is one run of the
//! `kv` function (`scripts/kv.lua`), which checks quotas with the write it limits, purges
//! expired entries as it goes, and sets the bucket's keys to expire with its last entry.

use redis::Value;

use super::client::Client;
use super::reply::Reply;
use super::scripts::{Call, SCRIPTS};
use crate::capability::kv::{BucketLimits, BucketRef, KeyPage, KvError, KvStore};
use crate::runtime::BoxFuture;

/// The three keys of bucket `name` of `handler`.
pub fn bucket_keys(handler: &str, name: &str) -> [String; 3] {
    let base = format!("wasmq:kv:{{{handler}/{name}}}");
    [
        format!("{base}:v"),
        format!("{base}:t"),
        format!("{base}:n"),
    ]
}

fn unavailable(e: impl std::fmt::Display) -> KvError {
    KvError::Unavailable(e.to_string())
}

impl Client {
    /// One call of the `kv` function: `op` with `args` on `bucket`. Returns the reply's items
    /// after its `ok`.
    async fn kv_call(
        &self,
        handler: &str,
        name: &str,
        limits: &BucketLimits,
        op: &str,
        args: &[&[u8]],
    ) -> Result<Vec<Value>, KvError> {
        let mut call = Call::function(&SCRIPTS.kv);
        for key in bucket_keys(handler, name) {
            call.key(key);
        }
        let ttl_ms = limits.ttl.map_or(0, |t| t.as_millis().max(1) as u64);
        call.arg(op)
            .arg(ttl_ms)
            .arg(limits.max_keys)
            .arg(limits.max_bytes);
        for arg in args {
            call.arg(*arg);
        }
        let reply = Reply::of("kv");
        let mut items = reply
            .array(self.invoke(&call).await.map_err(unavailable)?)
            .map_err(unavailable)?
            .into_iter();
        let status = items
            .next()
            .ok_or_else(|| unavailable("kv: an empty reply"))
            .and_then(|s| reply.string(s).map_err(unavailable))?;
        let message = |items: &mut std::vec::IntoIter<Value>| {
            items
                .next()
                .and_then(|m| reply.string(m).ok())
                .unwrap_or_default()
        };
        match status.as_str() {
            "ok" => Ok(items.collect()),
            "refused" => Err(KvError::Refused(message(&mut items))),
            "invalid" => Err(KvError::Invalid(message(&mut items))),
            _ => Err(KvError::Unavailable(message(&mut items))),
        }
    }

    /// The values of `keys` in bucket `name` of `handler` (none: absent or expired).
    pub async fn kv_get(
        &self,
        handler: &str,
        name: &str,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        let args: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
        let limits = BucketLimits::default();
        let mut items = self.kv_call(handler, name, &limits, "get", &args).await?;
        let reply = Reply::of("kv");
        let values = reply
            .array(items.pop().unwrap_or(Value::Nil))
            .map_err(unavailable)?;
        if values.len() != keys.len() {
            return Err(unavailable("kv: a reply of the wrong length"));
        }
        values
            .into_iter()
            .map(|v| match v {
                Value::Nil => Ok(None),
                v => reply.bytes(v).map(Some).map_err(unavailable),
            })
            .collect()
    }

    /// Deletes `keys` from bucket `name` of `handler`.
    pub async fn kv_delete(
        &self,
        handler: &str,
        name: &str,
        keys: &[String],
    ) -> Result<(), KvError> {
        let args: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
        self.kv_call(handler, name, &BucketLimits::default(), "delete", &args)
            .await
            .map(drop)
    }

    /// One page of the keys of bucket `name` of `handler`, from `cursor` (0: the first).
    pub async fn kv_list(
        &self,
        handler: &str,
        name: &str,
        cursor: u64,
    ) -> Result<KeyPage, KvError> {
        let cursor_arg = cursor.to_string();
        let items = self
            .kv_call(
                handler,
                name,
                &BucketLimits::default(),
                "list",
                &[cursor_arg.as_bytes()],
            )
            .await?;
        let reply = Reply::of("kv");
        let [next, keys] = <[Value; 2]>::try_from(items)
            .map_err(|_| unavailable("kv: a list reply of the wrong length"))?;
        let next = reply.uint(next).map_err(unavailable)?;
        Ok(KeyPage {
            keys: reply.strings(keys).map_err(unavailable)?,
            cursor: (next != 0).then_some(next),
        })
    }
}

impl KvStore for Client {
    fn get(
        &self,
        bucket: &BucketRef,
        key: String,
    ) -> BoxFuture<'_, Result<Option<Vec<u8>>, KvError>> {
        let bucket = bucket.clone();
        Box::pin(async move {
            let mut values = self.kv_get(&bucket.handler, &bucket.name, &[key]).await?;
            Ok(values.pop().flatten())
        })
    }

    fn get_many(
        &self,
        bucket: &BucketRef,
        keys: Vec<String>,
    ) -> BoxFuture<'_, Result<Vec<Option<Vec<u8>>>, KvError>> {
        let bucket = bucket.clone();
        Box::pin(async move { self.kv_get(&bucket.handler, &bucket.name, &keys).await })
    }

    fn set_many(
        &self,
        bucket: &BucketRef,
        pairs: Vec<(String, Vec<u8>)>,
    ) -> BoxFuture<'_, Result<(), KvError>> {
        let bucket = bucket.clone();
        Box::pin(async move {
            let args: Vec<&[u8]> = pairs
                .iter()
                .flat_map(|(k, v)| [k.as_bytes(), v.as_slice()])
                .collect();
            self.kv_call(&bucket.handler, &bucket.name, &bucket.limits, "set", &args)
                .await
                .map(drop)
        })
    }

    fn delete_many(
        &self,
        bucket: &BucketRef,
        keys: Vec<String>,
    ) -> BoxFuture<'_, Result<(), KvError>> {
        let bucket = bucket.clone();
        Box::pin(async move { self.kv_delete(&bucket.handler, &bucket.name, &keys).await })
    }

    fn increment(
        &self,
        bucket: &BucketRef,
        key: String,
        delta: u64,
    ) -> BoxFuture<'_, Result<u64, KvError>> {
        let bucket = bucket.clone();
        Box::pin(async move {
            let delta = delta.to_string();
            let mut items = self
                .kv_call(
                    &bucket.handler,
                    &bucket.name,
                    &bucket.limits,
                    "incr",
                    &[key.as_bytes(), delta.as_bytes()],
                )
                .await?;
            Reply::of("kv")
                .uint(items.pop().unwrap_or(Value::Nil))
                .map_err(unavailable)
        })
    }

    fn list_keys(
        &self,
        bucket: &BucketRef,
        cursor: Option<u64>,
    ) -> BoxFuture<'_, Result<KeyPage, KvError>> {
        let bucket = bucket.clone();
        Box::pin(async move {
            self.kv_list(&bucket.handler, &bucket.name, cursor.unwrap_or(0))
                .await
        })
    }
}
