//! The Lua scripts, one per state transition, loaded once and called by SHA1 (`EVALSHA`;
//! `redis::Script` loads the script and retries when Redis answers `NOSCRIPT`, e.g. after a
//! restart or `SCRIPT FLUSH`).
//!
//! **Invariant:** every change to a job's state happens inside one of these scripts, so no crash
//! between two commands can lose or duplicate a job. `lib.lua` (shared helpers) is prepended to
//! each script except `enqueue.lua`, which stays standalone so that producers in any language
//! can `EVAL` it verbatim (docs/protocol.md quotes it).

use std::sync::LazyLock;

use redis::Script;

/// The shared helpers prepended to every transition script but enqueue.
pub const LIB_LUA: &str = include_str!("scripts/lib.lua");
/// The enqueue script, exactly as producers may `EVAL` it.
pub const ENQUEUE_LUA: &str = include_str!("scripts/enqueue.lua");

pub(crate) struct Scripts {
    pub enqueue: Script,
    pub fetch: Script,
    pub extend: Script,
    pub complete: Script,
    pub complete_fetch: Script,
    pub fail: Script,
    pub release: Script,
    pub recover: Script,
    pub promote: Script,
    pub cancel: Script,
    pub replay: Script,
    pub purge: Script,
    pub pause: Script,
    pub resume: Script,
    pub counts: Script,
    pub list: Script,
    pub backlog: Script,
}

fn with_lib(body: &str) -> Script {
    Script::new(&format!("{LIB_LUA}\n{body}"))
}

pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    enqueue: Script::new(ENQUEUE_LUA),
    fetch: with_lib(include_str!("scripts/fetch.lua")),
    extend: with_lib(include_str!("scripts/extend.lua")),
    complete: with_lib(include_str!("scripts/complete.lua")),
    complete_fetch: with_lib(include_str!("scripts/complete_fetch.lua")),
    fail: with_lib(include_str!("scripts/fail.lua")),
    release: with_lib(include_str!("scripts/release.lua")),
    recover: with_lib(include_str!("scripts/recover.lua")),
    promote: with_lib(include_str!("scripts/promote.lua")),
    cancel: with_lib(include_str!("scripts/cancel.lua")),
    replay: with_lib(include_str!("scripts/replay.lua")),
    purge: with_lib(include_str!("scripts/purge.lua")),
    pause: with_lib(include_str!("scripts/pause.lua")),
    resume: with_lib(include_str!("scripts/resume.lua")),
    counts: with_lib(include_str!("scripts/counts.lua")),
    list: with_lib(include_str!("scripts/list.lua")),
    backlog: with_lib(include_str!("scripts/backlog.lua")),
});
