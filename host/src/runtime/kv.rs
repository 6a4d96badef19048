//! `wasi:keyvalue` (store, atomics, batch) for one attempt: opens only the buckets its
//! handler version was granted, checks keys, values and batch sizes before anything is sent,
//! counts calls, and hands each call to the host's [`KvStore`](crate::capability::KvStore).

use wasmtime::component::Resource;

use super::HostState;
use super::bindings::wasi::keyvalue::{atomics, batch, store};
use crate::capability::kv::{
    BucketRef, KvError, MAX_BATCH_KEYS, MAX_CALLS_PER_ATTEMPT, check_key, quota_value,
};

/// An open bucket, as the guest's `bucket` resource holds it.
pub struct KvBucket {
    bucket: BucketRef,
}

fn other(e: KvError) -> store::Error {
    store::Error::Other(e.to_string())
}

impl HostState {
    /// The bucket behind `handle`, counting the call against the attempt's allowance.
    fn kv_call(&mut self, handle: &Resource<KvBucket>) -> Result<BucketRef, store::Error> {
        self.kv_calls = self.kv_calls.saturating_add(1);
        if self.kv_calls > MAX_CALLS_PER_ATTEMPT {
            return Err(store::Error::Other(format!(
                "at most {MAX_CALLS_PER_ATTEMPT} key-value calls per attempt"
            )));
        }
        self.table
            .get(handle)
            .map(|b| b.bucket.clone())
            .map_err(|e| store::Error::Other(format!("bucket: {e}")))
    }

    fn kv_store(&self) -> Result<std::sync::Arc<dyn crate::capability::KvStore>, store::Error> {
        self.caps
            .kv_store
            .clone()
            .ok_or_else(|| store::Error::Other("this host has no key-value store".to_string()))
    }
}

fn check_keys(keys: &[String]) -> Result<(), store::Error> {
    if keys.len() > MAX_BATCH_KEYS {
        return Err(store::Error::Other(format!(
            "at most {MAX_BATCH_KEYS} keys per batch call, got {}",
            keys.len()
        )));
    }
    keys.iter().try_for_each(|k| check_key(k).map_err(other))
}

fn check_pairs(bucket: &BucketRef, pairs: &[(String, Vec<u8>)]) -> Result<(), store::Error> {
    if pairs.len() > MAX_BATCH_KEYS {
        return Err(store::Error::Other(format!(
            "at most {MAX_BATCH_KEYS} keys per batch call, got {}",
            pairs.len()
        )));
    }
    for (key, value) in pairs {
        check_key(key).map_err(other)?;
        if value.len() as u64 > bucket.limits.max_value {
            return Err(other(quota_value(value.len() as u64, &bucket.limits)));
        }
    }
    Ok(())
}

impl store::Host for HostState {
    async fn open(&mut self, identifier: String) -> Result<Resource<KvBucket>, store::Error> {
        let Some(grant) = self.caps.kv.iter().find(|g| g.name == identifier) else {
            tracing::warn!(handler = %self.caps.handler, bucket = %identifier.escape_debug(),
                "key-value bucket not granted");
            return Err(store::Error::AccessDenied);
        };
        let bucket = BucketRef {
            handler: self.caps.handler.clone(),
            name: grant.name.clone(),
            limits: grant.limits,
        };
        self.table
            .push(KvBucket { bucket })
            .map_err(|e| store::Error::Other(format!("bucket: {e}")))
    }
}

impl store::HostBucket for HostState {
    async fn get(
        &mut self,
        handle: Resource<KvBucket>,
        key: String,
    ) -> Result<Option<Vec<u8>>, store::Error> {
        let bucket = self.kv_call(&handle)?;
        check_key(&key).map_err(other)?;
        self.kv_store()?.get(&bucket, key).await.map_err(other)
    }

    async fn set(
        &mut self,
        handle: Resource<KvBucket>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), store::Error> {
        let bucket = self.kv_call(&handle)?;
        let pairs = vec![(key, value)];
        check_pairs(&bucket, &pairs)?;
        self.kv_store()?
            .set_many(&bucket, pairs)
            .await
            .map_err(other)
    }

    async fn delete(
        &mut self,
        handle: Resource<KvBucket>,
        key: String,
    ) -> Result<(), store::Error> {
        let bucket = self.kv_call(&handle)?;
        check_key(&key).map_err(other)?;
        self.kv_store()?
            .delete_many(&bucket, vec![key])
            .await
            .map_err(other)
    }

    async fn exists(
        &mut self,
        handle: Resource<KvBucket>,
        key: String,
    ) -> Result<bool, store::Error> {
        let bucket = self.kv_call(&handle)?;
        check_key(&key).map_err(other)?;
        let value = self.kv_store()?.get(&bucket, key).await.map_err(other)?;
        Ok(value.is_some())
    }

    async fn list_keys(
        &mut self,
        handle: Resource<KvBucket>,
        cursor: Option<u64>,
    ) -> Result<store::KeyResponse, store::Error> {
        let bucket = self.kv_call(&handle)?;
        let page = self
            .kv_store()?
            .list_keys(&bucket, cursor)
            .await
            .map_err(other)?;
        Ok(store::KeyResponse {
            keys: page.keys,
            cursor: page.cursor,
        })
    }

    async fn drop(&mut self, handle: Resource<KvBucket>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

impl atomics::Host for HostState {
    async fn increment(
        &mut self,
        handle: Resource<KvBucket>,
        key: String,
        delta: u64,
    ) -> Result<u64, store::Error> {
        let bucket = self.kv_call(&handle)?;
        check_key(&key).map_err(other)?;
        self.kv_store()?
            .increment(&bucket, key, delta)
            .await
            .map_err(other)
    }
}

impl batch::Host for HostState {
    async fn get_many(
        &mut self,
        handle: Resource<KvBucket>,
        keys: Vec<String>,
    ) -> Result<Vec<Option<(String, Vec<u8>)>>, store::Error> {
        let bucket = self.kv_call(&handle)?;
        check_keys(&keys)?;
        let values = self
            .kv_store()?
            .get_many(&bucket, keys.clone())
            .await
            .map_err(other)?;
        Ok(keys
            .into_iter()
            .zip(values)
            .map(|(k, v)| v.map(|v| (k, v)))
            .collect())
    }

    async fn set_many(
        &mut self,
        handle: Resource<KvBucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Result<(), store::Error> {
        let bucket = self.kv_call(&handle)?;
        check_pairs(&bucket, &key_values)?;
        self.kv_store()?
            .set_many(&bucket, key_values)
            .await
            .map_err(other)
    }

    async fn delete_many(
        &mut self,
        handle: Resource<KvBucket>,
        keys: Vec<String>,
    ) -> Result<(), store::Error> {
        let bucket = self.kv_call(&handle)?;
        check_keys(&keys)?;
        self.kv_store()?
            .delete_many(&bucket, keys)
            .await
            .map_err(other)
    }
}
