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

use super::job::JobState;
use super::keys::Key::{self, *};
use super::keys::QueueKeys;

/// The shared helpers of every transition but enqueue, defined once per library load.
pub const LIB_LUA: &str = include_str!("scripts/lib.lua");
/// The enqueue script, exactly as producers may `EVAL` it.
pub const ENQUEUE_LUA: &str = include_str!("scripts/enqueue.lua");
/// The counts script, exactly as producers may `EVAL` it.
pub const COUNTS_LUA: &str = include_str!("scripts/counts.lua");

// The keys each transition takes, in `KEYS` order: one table per script, beside its body. A
// test reads each script's header (`KEYS[n] <role>`) and checks its table against it.
const FETCH_KEYS: &[Key] = &[
    JobPrefix,
    Config,
    Waiting,
    Delayed,
    Retry,
    Active,
    Seq,
    Events,
    Wake,
    Rate,
    GroupPrefix,
    Groups,
];
const COMPLETE_FETCH_KEYS: &[Key] = &[
    JobPrefix,
    Config,
    Waiting,
    Delayed,
    Retry,
    Active,
    Seq,
    Events,
    Wake,
    Rate,
    GroupPrefix,
    Groups,
    Completed,
    Dead,
    StepsPrefix,
    Outbox,
];
const FAIL_KEYS: &[Key] = &[
    JobPrefix,
    Config,
    Active,
    Retry,
    Dead,
    Waiting,
    Seq,
    Events,
    Wake,
    GroupPrefix,
    Groups,
];
const ENQUEUE_KEYS: &[Key] = &[
    JobPrefix,
    Config,
    Waiting,
    Delayed,
    Seq,
    Events,
    Wake,
    GroupPrefix,
    Groups,
    DedupePrefix,
    DebouncePrefix,
];
const COUNTS_KEYS: &[Key] = &[
    Config,
    Waiting,
    Delayed,
    Active,
    Retry,
    Completed,
    Dead,
    GroupPrefix,
    Groups,
];

/// The transitions in the function library: name, Lua body, and the keys it takes. A body
/// reads `KEYS` and `ARGV` as a script's would; the library sets both before running it.
const BODIES: [(&str, &str, &[Key]); 25] = [
    ("fetch", include_str!("scripts/fetch.lua"), FETCH_KEYS),
    (
        "extend",
        include_str!("scripts/extend.lua"),
        &[JobPrefix, Active],
    ),
    (
        "complete",
        include_str!("scripts/complete.lua"),
        &[
            JobPrefix,
            Config,
            Active,
            Completed,
            Dead,
            Events,
            StepsPrefix,
            Outbox,
        ],
    ),
    (
        "complete_fetch",
        include_str!("scripts/complete_fetch.lua"),
        COMPLETE_FETCH_KEYS,
    ),
    ("fail", include_str!("scripts/fail.lua"), FAIL_KEYS),
    (
        "release",
        include_str!("scripts/release.lua"),
        &[
            JobPrefix,
            Config,
            Active,
            Waiting,
            Events,
            Wake,
            GroupPrefix,
            Groups,
        ],
    ),
    ("recover", include_str!("scripts/recover.lua"), FAIL_KEYS),
    (
        "promote",
        include_str!("scripts/promote.lua"),
        &[
            JobPrefix,
            Config,
            Waiting,
            Delayed,
            Retry,
            Seq,
            Events,
            Wake,
            GroupPrefix,
            Groups,
        ],
    ),
    (
        "cancel",
        include_str!("scripts/cancel.lua"),
        &[
            JobPrefix,
            Config,
            Waiting,
            Delayed,
            Retry,
            Events,
            GroupPrefix,
            Groups,
            StepsPrefix,
            Active,
            Dead,
            CancelChannel,
        ],
    ),
    (
        "cancel_filter",
        include_str!("scripts/cancel_filter.lua"),
        &[
            JobPrefix,
            Config,
            Waiting,
            Delayed,
            Retry,
            Events,
            GroupPrefix,
            Groups,
            Dead,
        ],
    ),
    (
        "replay",
        include_str!("scripts/replay.lua"),
        &[
            JobPrefix,
            Config,
            Dead,
            Waiting,
            Seq,
            Events,
            Wake,
            GroupPrefix,
            Groups,
        ],
    ),
    (
        "purge",
        include_str!("scripts/purge.lua"),
        &[JobPrefix, Config, Dead, Events, StepsPrefix],
    ),
    (
        "pause",
        include_str!("scripts/pause.lua"),
        &[Config, Events],
    ),
    (
        "resume",
        include_str!("scripts/resume.lua"),
        &[Config, Events, Waiting, Wake, Groups],
    ),
    (
        "list",
        include_str!("scripts/list.lua"),
        &[JobPrefix, Listed, Active, GroupPrefix, Groups],
    ),
    (
        "search",
        include_str!("scripts/search.lua"),
        &[
            JobPrefix,
            Waiting,
            Delayed,
            Active,
            Retry,
            Completed,
            Dead,
            GroupPrefix,
            Groups,
        ],
    ),
    (
        "backlog",
        include_str!("scripts/backlog.lua"),
        &[JobPrefix, Config, Waiting, GroupPrefix, Groups, Alerts],
    ),
    (
        "step_save",
        include_str!("scripts/step_save.lua"),
        &[JobPrefix, StepsPrefix, Config, Events],
    ),
    (
        "dead_steps",
        include_str!("scripts/dead_steps.lua"),
        &[
            JobPrefix,
            Config,
            Dead,
            StepsPrefix,
            DeadSteps,
            DeadStepsBytes,
            DeadStepsMeta,
        ],
    ),
    (
        "suspend",
        include_str!("scripts/suspend.lua"),
        &[JobPrefix, Config, Active, Delayed, Events, StepsPrefix],
    ),
    (
        "outbox_due",
        include_str!("scripts/outbox_due.lua"),
        &[Outbox],
    ),
    (
        "outbox_done",
        include_str!("scripts/outbox_done.lua"),
        &[Outbox],
    ),
    (
        "throttle",
        include_str!("scripts/throttle.lua"),
        &[JobPrefix, ThrottlePrefix],
    ),
    (
        "check",
        include_str!("scripts/check.lua"),
        &[
            JobPrefix,
            Config,
            Waiting,
            Delayed,
            Active,
            Retry,
            Completed,
            Dead,
            Events,
            GroupPrefix,
            Groups,
            Seq,
            Wake,
            Rate,
            Outbox,
            Alerts,
        ],
    ),
    // A key-value bucket's keys are not a queue's: `kv::bucket_keys` names them.
    ("kv", include_str!("scripts/kv.lua"), &[]),
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
        // transition's name (its top-level `return` the function's), starting with
        // `new_call()`: lib.lua's per-call state is the library's, kept between calls. The
        // loading code runs where only `redis.register_function` is callable: not even
        // `pairs`.
        let mut body = String::from("local KEYS, ARGV = {}, {}\n");
        body.push_str(LIB_LUA);
        for (name, code, _) in BODIES {
            body.push_str(&format!(
                "\nredis.register_function('wasmq_{name}_VERSION', function(keys, args)\n  \
                 KEYS, ARGV = keys, args\n  new_call()\n{code}\nend)\n"
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
    keys: &'static [Key],
}

/// A standalone script (enqueue, counts), called with `EVALSHA`.
pub(crate) struct Standalone {
    script: Script,
    keys: &'static [Key],
}

pub(crate) struct Scripts {
    pub enqueue: Standalone,
    pub fetch: Function,
    pub extend: Function,
    pub complete: Function,
    pub complete_fetch: Function,
    pub fail: Function,
    pub release: Function,
    pub recover: Function,
    pub promote: Function,
    pub cancel: Function,
    pub cancel_filter: Function,
    pub replay: Function,
    pub purge: Function,
    pub pause: Function,
    pub resume: Function,
    pub counts: Standalone,
    pub list: Function,
    pub search: Function,
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
    let keys = BODIES
        .iter()
        .find(|(name, _, _)| *name == transition)
        .map_or(&[][..], |(_, _, keys)| *keys);
    debug_assert!(BODIES.iter().any(|(name, _, _)| *name == transition));
    Function {
        name: LIBRARY.function(transition),
        keys,
    }
}

pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    enqueue: Standalone {
        script: Script::new(ENQUEUE_LUA),
        keys: ENQUEUE_KEYS,
    },
    fetch: function("fetch"),
    extend: function("extend"),
    complete: function("complete"),
    complete_fetch: function("complete_fetch"),
    fail: function("fail"),
    release: function("release"),
    recover: function("recover"),
    promote: function("promote"),
    cancel: function("cancel"),
    cancel_filter: function("cancel_filter"),
    replay: function("replay"),
    purge: function("purge"),
    pause: function("pause"),
    resume: function("resume"),
    counts: Standalone {
        script: Script::new(COUNTS_LUA),
        keys: COUNTS_KEYS,
    },
    list: function("list"),
    search: function("search"),
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
    /// A call of a queue's transition, with the keys of the transition's table.
    pub fn on(transition: impl Into<Call<'a>> + Keyed, keys: &QueueKeys) -> Call<'a> {
        Self::with_table(transition, keys, None)
    }

    /// A call of `list`, which reads the set of `state`.
    pub fn listing(transition: &'a Function, keys: &QueueKeys, state: JobState) -> Call<'a> {
        Self::with_table(transition, keys, Some(state))
    }

    fn with_table(
        transition: impl Into<Call<'a>> + Keyed,
        keys: &QueueKeys,
        listed: Option<JobState>,
    ) -> Call<'a> {
        let table = transition.table();
        let mut call = transition.into();
        for &role in table {
            call.key(keys.get(role, listed));
        }
        call
    }

    /// A call with no keys yet: the caller adds them (`kv`, whose keys are a bucket's).
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

/// A transition with a table of the keys it takes.
pub(crate) trait Keyed {
    fn table(&self) -> &'static [Key];
}

impl Keyed for &Standalone {
    fn table(&self) -> &'static [Key] {
        self.keys
    }
}

impl Keyed for &Function {
    fn table(&self) -> &'static [Key] {
        self.keys
    }
}

impl<'a> From<&'a Standalone> for Call<'a> {
    fn from(standalone: &'a Standalone) -> Call<'a> {
        Call {
            target: Target::Script(&standalone.script),
            keys: Vec::new(),
            args: Vec::new(),
        }
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
        for (name, _, _) in BODIES {
            let registered = format!("redis.register_function('{}',", lib.function(name));
            assert_eq!(lib.source.matches(&registered).count(), 1, "{name}");
        }
        assert!(!lib.source.contains("_VERSION'"));
    }

    /// The roles a script's header gives its keys, in `KEYS` order: each `KEYS[n] <role>` of
    /// the comment block at its top, the role ending at two spaces, a parenthesis, a comma or
    /// the line's end. Enqueue's header (quoted by docs/protocol.md) names its keys in full.
    fn header_roles(lua: &str) -> Vec<(usize, String)> {
        let mut roles = Vec::new();
        for line in lua.lines().take_while(|line| line.starts_with("--")) {
            let mut rest = line;
            while let Some(at) = rest.find("KEYS[") {
                rest = &rest[at + 5..];
                let Some(close) = rest.find(']') else { break };
                let Ok(n) = rest[..close].parse::<usize>() else {
                    continue;
                };
                rest = rest[close + 1..].trim_start();
                let end = ["  ", " (", ",", ";", "KEYS["]
                    .iter()
                    .filter_map(|stop| rest.find(stop))
                    .min()
                    .unwrap_or(rest.len());
                let role = rest[..end].trim();
                let role = match role.strip_prefix("wasmq:{q}:") {
                    Some("job:") => "job prefix",
                    Some("g:") => "group prefix",
                    Some("dedupe:") => "dedupe prefix",
                    Some("debounce:") => "debounce prefix",
                    Some(name) => name,
                    None => role,
                };
                roles.push((n, role.to_string()));
            }
        }
        roles
    }

    #[test]
    fn every_key_table_matches_its_scripts_header_position_by_position() {
        let mut scripts: Vec<(&str, &str, &[Key])> = BODIES.to_vec();
        scripts.push(("enqueue", ENQUEUE_LUA, ENQUEUE_KEYS));
        scripts.push(("counts", COUNTS_LUA, COUNTS_KEYS));
        for (name, lua, table) in scripts {
            if name == "kv" {
                // A bucket's keys, not a queue's (`kv::bucket_keys`).
                assert!(table.is_empty());
                continue;
            }
            let header = header_roles(lua);
            let expected: Vec<(usize, String)> = table
                .iter()
                .enumerate()
                .map(|(i, key)| (i + 1, key.header_name().to_string()))
                .collect();
            assert_eq!(
                header, expected,
                "{name}.lua's header against its key table"
            );
        }
    }

    #[test]
    fn only_list_takes_the_set_a_call_names() {
        for (name, _, table) in BODIES {
            assert_eq!(table.contains(&Listed), name == "list", "{name}");
        }
        assert!(!ENQUEUE_KEYS.contains(&Listed) && !COUNTS_KEYS.contains(&Listed));
    }

    #[test]
    fn a_call_on_a_queue_takes_its_keys_from_the_table() {
        let keys = QueueKeys::new("q").unwrap_or_else(|e| panic!("{e}"));
        let call = Call::on(&SCRIPTS.extend, &keys);
        assert_eq!(
            call.keys,
            vec![b"wasmq:{q}:job:".to_vec(), b"wasmq:{q}:active".to_vec()]
        );
        let call = Call::listing(&SCRIPTS.list, &keys, JobState::Dead);
        assert_eq!(call.keys[1], b"wasmq:{q}:dead".to_vec());
        assert_eq!(Call::on(&SCRIPTS.fetch, &keys).keys.len(), 12);
        assert_eq!(Call::on(&SCRIPTS.complete_fetch, &keys).keys.len(), 16);
    }
}
