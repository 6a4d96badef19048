//! The Lua code, one body per state transition, run as Redis functions.
//!
//! `lib.lua` (shared helpers) and every transition body but `enqueue.lua` form one Redis
//! function library, `wasmq_<version>`, loaded once per Redis with `FUNCTION LOAD` and called
//! with `FCALL wasmq_<transition>_<version>`. A call runs only its transition's body: the
//! helpers were defined when the library was loaded, not again on every call as they would be
//! if they were prepended to an `EVALSHA` script (which cost Redis more CPU than the commands
//! of a one-job fetch). The version is a hash of the library's text, so hosts of different
//! builds sharing one Redis each call the code they were built with. Redis keeps loaded
//! libraries in its RDB and AOF and on its replicas; a Redis that lost them (restarted without
//! persistence, `FUNCTION FLUSH`) answers `Function not found`, and [`Call::invoke`] loads the
//! library again and retries once.
//!
//! `enqueue.lua` and `counts.lua` stay standalone scripts called with `EVALSHA`
//! (`redis::Script` loads them and retries on `NOSCRIPT`), so that producers in any language
//! can `EVAL` them verbatim: they are the stable part of the protocol that the SDKs in `sdk/`
//! ship (docs/protocol.md quotes enqueue.lua, "Stable contract").
//!
//! **Invariant:** every change to a job's state happens inside one function or script call, so
//! no crash between two commands can lose or duplicate a job.

use std::sync::LazyLock;

use redis::aio::ConnectionLike;
use redis::{RedisResult, Script, ToRedisArgs, Value};
use sha2::{Digest, Sha256};

/// The shared helpers of every transition but enqueue, defined once per library load.
pub const LIB_LUA: &str = include_str!("scripts/lib.lua");
/// The enqueue script, exactly as producers may `EVAL` it.
pub const ENQUEUE_LUA: &str = include_str!("scripts/enqueue.lua");
/// The counts script, exactly as producers may `EVAL` it.
pub const COUNTS_LUA: &str = include_str!("scripts/counts.lua");

/// The transitions in the function library: name and Lua body. A body reads `KEYS` and `ARGV`
/// as a script's would; the library sets both before running it.
const BODIES: [(&str, &str); 23] = [
    ("fetch", include_str!("scripts/fetch.lua")),
    ("extend", include_str!("scripts/extend.lua")),
    ("complete", include_str!("scripts/complete.lua")),
    ("complete_fetch", include_str!("scripts/complete_fetch.lua")),
    ("fail", include_str!("scripts/fail.lua")),
    ("release", include_str!("scripts/release.lua")),
    ("recover", include_str!("scripts/recover.lua")),
    ("promote", include_str!("scripts/promote.lua")),
    ("cancel", include_str!("scripts/cancel.lua")),
    ("replay", include_str!("scripts/replay.lua")),
    ("purge", include_str!("scripts/purge.lua")),
    ("pause", include_str!("scripts/pause.lua")),
    ("resume", include_str!("scripts/resume.lua")),
    ("list", include_str!("scripts/list.lua")),
    ("backlog", include_str!("scripts/backlog.lua")),
    ("step_save", include_str!("scripts/step_save.lua")),
    ("dead_steps", include_str!("scripts/dead_steps.lua")),
    ("suspend", include_str!("scripts/suspend.lua")),
    ("outbox_due", include_str!("scripts/outbox_due.lua")),
    ("outbox_done", include_str!("scripts/outbox_done.lua")),
    ("throttle", include_str!("scripts/throttle.lua")),
    ("check", include_str!("scripts/check.lua")),
    ("kv", include_str!("scripts/kv.lua")),
];

/// The function library: its Lua source (what `FUNCTION LOAD` takes) and version.
pub(crate) struct Library {
    pub version: String,
    pub source: String,
}

impl Library {
    fn build() -> Library {
        // The version names the code, not the build: a library is the same wherever its
        // bodies and helpers are. Each body becomes the function registered under its
        // transition's name (its top-level `return` the function's). The loading code runs
        // where only `redis.register_function` is callable: not even `pairs`.
        let mut body = String::from("local KEYS, ARGV = {}, {}\n");
        body.push_str(LIB_LUA);
        for (name, code) in BODIES {
            body.push_str(&format!(
                "\nredis.register_function('wasmq_{name}_VERSION', function(keys, args)\n  \
                 KEYS, ARGV = keys, args\n{code}\nend)\n"
            ));
        }
        let version = Sha256::digest(body.as_bytes())
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        let source = format!(
            "#!lua name=wasmq_{version}\n{}",
            body.replace(
                "_VERSION', function(keys, args)",
                &format!("_{version}', function(keys, args)")
            )
        );
        Library { version, source }
    }

    /// The name of a transition's function in this library.
    fn function(&self, transition: &str) -> String {
        format!("wasmq_{transition}_{}", self.version)
    }
}

pub(crate) static LIBRARY: LazyLock<Library> = LazyLock::new(Library::build);

/// One transition of the library, called with `FCALL`.
pub(crate) struct Function {
    name: String,
}

pub(crate) struct Scripts {
    pub enqueue: Script,
    pub fetch: Function,
    pub extend: Function,
    pub complete: Function,
    pub complete_fetch: Function,
    pub fail: Function,
    pub release: Function,
    pub recover: Function,
    pub promote: Function,
    pub cancel: Function,
    pub replay: Function,
    pub purge: Function,
    pub pause: Function,
    pub resume: Function,
    pub counts: Script,
    pub list: Function,
    pub backlog: Function,
    pub step_save: Function,
    pub dead_steps: Function,
    pub suspend: Function,
    pub outbox_due: Function,
    pub outbox_done: Function,
    pub throttle: Function,
    pub check: Function,
    pub kv: Function,
}

fn function(transition: &str) -> Function {
    debug_assert!(BODIES.iter().any(|(name, _)| *name == transition));
    Function {
        name: LIBRARY.function(transition),
    }
}

pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    enqueue: Script::new(ENQUEUE_LUA),
    fetch: function("fetch"),
    extend: function("extend"),
    complete: function("complete"),
    complete_fetch: function("complete_fetch"),
    fail: function("fail"),
    release: function("release"),
    recover: function("recover"),
    promote: function("promote"),
    cancel: function("cancel"),
    replay: function("replay"),
    purge: function("purge"),
    pause: function("pause"),
    resume: function("resume"),
    counts: Script::new(COUNTS_LUA),
    list: function("list"),
    backlog: function("backlog"),
    step_save: function("step_save"),
    dead_steps: function("dead_steps"),
    suspend: function("suspend"),
    outbox_due: function("outbox_due"),
    outbox_done: function("outbox_done"),
    throttle: function("throttle"),
    check: function("check"),
    kv: function("kv"),
});

/// What a [`Call`] runs.
enum Target<'a> {
    Script(&'a Script),
    Function(&'a Function),
}

/// One call of a transition: its keys and arguments, built up like `redis::ScriptInvocation`.
pub(crate) struct Call<'a> {
    target: Target<'a>,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl<'a> Call<'a> {
    pub fn script(script: &'a Script) -> Call<'a> {
        Call {
            target: Target::Script(script),
            keys: Vec::new(),
            args: Vec::new(),
        }
    }

    pub fn function(function: &'a Function) -> Call<'a> {
        Call {
            target: Target::Function(function),
            keys: Vec::new(),
            args: Vec::new(),
        }
    }

    pub fn key<T: ToRedisArgs>(&mut self, key: T) -> &mut Self {
        key.write_redis_args(&mut self.keys);
        self
    }

    pub fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        arg.write_redis_args(&mut self.args);
        self
    }

    /// Runs the call; a function missing from Redis (restarted without persistence, or never
    /// loaded) makes it load the library and try once more.
    pub async fn invoke<C: ConnectionLike>(&self, conn: &mut C) -> RedisResult<Value> {
        match self.target {
            Target::Script(script) => {
                let mut invocation = script.prepare_invoke();
                for key in &self.keys {
                    invocation.key(key.as_slice());
                }
                for arg in &self.args {
                    invocation.arg(arg.as_slice());
                }
                invocation.invoke_async(conn).await
            }
            Target::Function(function) => {
                let mut fcall = redis::cmd("FCALL");
                fcall.arg(&function.name).arg(self.keys.len());
                for key in &self.keys {
                    fcall.arg(key.as_slice());
                }
                for arg in &self.args {
                    fcall.arg(arg.as_slice());
                }
                match fcall.query_async(conn).await {
                    Err(err) if is_function_missing(&err) => {
                        load_library(conn).await?;
                        fcall.query_async(conn).await
                    }
                    reply => reply,
                }
            }
        }
    }
}

impl<'a> From<&'a Script> for Call<'a> {
    fn from(script: &'a Script) -> Call<'a> {
        Call::script(script)
    }
}

impl<'a> From<&'a Function> for Call<'a> {
    fn from(function: &'a Function) -> Call<'a> {
        Call::function(function)
    }
}

/// Whether Redis refused an `FCALL` because it does not have the function.
fn is_function_missing(err: &redis::RedisError) -> bool {
    err.detail()
        .is_some_and(|detail| detail.starts_with("Function not found"))
}

/// Loads (or reloads: `REPLACE` makes it idempotent) the function library into Redis.
pub(crate) async fn load_library<C: ConnectionLike>(conn: &mut C) -> RedisResult<()> {
    redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(&LIBRARY.source)
        .query_async::<Value>(conn)
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_transition_has_a_function_named_after_the_library_version() {
        let lib = &*LIBRARY;
        assert_eq!(lib.version.len(), 12);
        assert!(
            lib.source
                .starts_with(&format!("#!lua name=wasmq_{}\n", lib.version))
        );
        assert_eq!(
            SCRIPTS.complete_fetch.name,
            format!("wasmq_complete_fetch_{}", lib.version)
        );
        for (name, _) in BODIES {
            let registered = format!("redis.register_function('{}',", lib.function(name));
            assert_eq!(lib.source.matches(&registered).count(), 1, "{name}");
        }
        assert!(!lib.source.contains("_VERSION'"));
    }
}
