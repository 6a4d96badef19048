//! `wasmq kv list|get|delete`: look into a handler's key-value buckets (docs/capabilities.md).

use std::io::Write;

use clap::Subcommand;

use super::queue::RedisArgs;
use crate::capability::kv::{check_key, validate_bucket_name};

#[derive(Debug, Subcommand)]
pub enum KvAction {
    /// List the keys of bucket BUCKET of handler HANDLER, one per line, sorted.
    List {
        handler: String,
        bucket: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        redis: RedisArgs,
    },
    /// Print the value of KEY as it is stored (bytes), or exit 1 when there is none.
    Get {
        handler: String,
        bucket: String,
        key: String,
        #[command(flatten)]
        redis: RedisArgs,
    },
    /// Delete KEY (nothing happens when it is absent).
    Delete {
        handler: String,
        bucket: String,
        key: String,
        #[command(flatten)]
        redis: RedisArgs,
    },
}

fn check(handler: &str, bucket: &str, key: Option<&str>) -> anyhow::Result<()> {
    crate::queue::validate_handler_name(handler).map_err(|e| anyhow::anyhow!("{e}"))?;
    validate_bucket_name(bucket).map_err(anyhow::Error::msg)?;
    if let Some(key) = key {
        check_key(key).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(())
}

pub async fn run(action: KvAction) -> anyhow::Result<u8> {
    match action {
        KvAction::List {
            handler,
            bucket,
            json,
            redis,
        } => {
            check(&handler, &bucket, None)?;
            let client = redis.client().await?;
            let mut keys = Vec::new();
            let mut cursor = 0;
            loop {
                let page = client.kv_list(&handler, &bucket, cursor).await?;
                keys.extend(page.keys);
                match page.cursor {
                    Some(next) => cursor = next,
                    None => break,
                }
            }
            keys.sort();
            keys.dedup();
            if json {
                say!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                for key in keys {
                    say!("{key}");
                }
            }
            Ok(0)
        }
        KvAction::Get {
            handler,
            bucket,
            key,
            redis,
        } => {
            check(&handler, &bucket, Some(&key))?;
            let client = redis.client().await?;
            let value = client
                .kv_get(&handler, &bucket, std::slice::from_ref(&key))
                .await?
                .pop()
                .flatten();
            match value {
                Some(bytes) => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&bytes)?;
                    out.flush()?;
                    Ok(0)
                }
                None => {
                    eprintln!("{handler}/{bucket}: no key {key:?}");
                    Ok(1)
                }
            }
        }
        KvAction::Delete {
            handler,
            bucket,
            key,
            redis,
        } => {
            check(&handler, &bucket, Some(&key))?;
            let client = redis.client().await?;
            client
                .kv_delete(&handler, &bucket, std::slice::from_ref(&key))
                .await?;
            say!("{handler}/{bucket}: deleted {key:?}");
            Ok(0)
        }
    }
}
