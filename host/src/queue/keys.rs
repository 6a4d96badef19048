//! Key names. Every key of a queue starts with `wasmq:{<queue>}:`, so the hash tag `{<queue>}`
//! puts a whole queue in one Redis Cluster slot and every script runs on one node.

use super::error::{QueueError, Result};
use super::job::{JobState, validate_queue_name};

/// The keys of one queue (see docs/protocol.md, "Keys").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueKeys {
    queue: String,
    base: String,
}

impl QueueKeys {
    /// The keys of `queue`, after checking that the name is usable in a key.
    pub fn new(queue: &str) -> Result<QueueKeys> {
        validate_queue_name(queue).map_err(QueueError::InvalidQueue)?;
        Ok(QueueKeys {
            queue: queue.to_string(),
            base: format!("wasmq:{{{queue}}}:"),
        })
    }

    pub fn queue(&self) -> &str {
        &self.queue
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.base)
    }

    /// `wasmq:{q}:job:`: prefix of the job hashes; scripts get it as KEYS[1].
    pub fn job_prefix(&self) -> String {
        self.key("job:")
    }

    /// `wasmq:{q}:job:<id>`: one job's hash.
    pub fn job(&self, id: &str) -> String {
        self.key(&format!("job:{id}"))
    }

    /// `wasmq:{q}:cancel`: the pub/sub channel on which `cancel.lua` tells the host running
    /// a job that it was cancelled (message `<lease token> <job id>`).
    pub fn cancel_channel(&self) -> String {
        self.key("cancel")
    }

    /// `wasmq:{q}:config`: per-queue settings and the pause flag.
    pub fn config(&self) -> String {
        self.key("config")
    }

    /// The sorted set holding the jobs in `state`: `wasmq:{q}:<state>`.
    pub fn state(&self, state: JobState) -> String {
        self.key(state.as_str())
    }

    pub fn waiting(&self) -> String {
        self.state(JobState::Waiting)
    }

    pub fn delayed(&self) -> String {
        self.state(JobState::Delayed)
    }

    pub fn active(&self) -> String {
        self.state(JobState::Active)
    }

    pub fn retry(&self) -> String {
        self.state(JobState::Retry)
    }

    pub fn completed(&self) -> String {
        self.state(JobState::Completed)
    }

    pub fn dead(&self) -> String {
        self.state(JobState::Dead)
    }

    /// `wasmq:{q}:seq`: the counter behind FIFO order within a priority.
    pub fn seq(&self) -> String {
        self.key("seq")
    }

    /// `wasmq:{q}:events`: the events stream.
    pub fn events(&self) -> String {
        self.key("events")
    }

    /// `wasmq:{q}:wake`: the list idle workers block on (BLPOP).
    pub fn wake(&self) -> String {
        self.key("wake")
    }

    /// `wasmq:{q}:rate`: the queue's sliding-window log of job starts (its rate limit).
    pub fn rate(&self) -> String {
        self.key("rate")
    }

    /// `wasmq:{q}:g:`: prefix of the per-group keys; scripts get it in KEYS and append
    /// `<group>:waiting`, `<group>:rate` or `<group>:active`, so those keys share the queue's hash tag.
    pub fn group_prefix(&self) -> String {
        self.key("g:")
    }

    /// `wasmq:{q}:g:<group>:waiting`: the waiting jobs of one group.
    pub fn group_waiting(&self, group: &str) -> String {
        self.key(&format!("g:{group}:waiting"))
    }

    /// `wasmq:{q}:g:<group>:rate`: one group's sliding-window log of job starts.
    pub fn group_rate(&self, group: &str) -> String {
        self.key(&format!("g:{group}:rate"))
    }

    /// `wasmq:{q}:g:<group>:active`: one group's running jobs while the queue has a group
    /// concurrency limit (its slots), each scored by its lease expiry.
    pub fn group_slots(&self, group: &str) -> String {
        self.key(&format!("g:{group}:active"))
    }

    /// `wasmq:{q}:groups`: the groups with waiting jobs, scored by when each may start next.
    pub fn groups(&self) -> String {
        self.key("groups")
    }

    /// `wasmq:{q}:alerts`: the backlog alerts in force (field: condition, value: since when,
    /// ms), shared by every host so that each change is announced once.
    pub fn alerts(&self) -> String {
        self.key("alerts")
    }

    /// `wasmq:{q}:steps:`: prefix of the per-job step hashes; scripts get it in KEYS and
    /// append the job id.
    pub fn steps_prefix(&self) -> String {
        self.key("steps:")
    }

    /// `wasmq:{q}:steps:<id>`: one job's durable steps and elapsed sleeps (field `run:<name>`
    /// or `sleep:<name>`).
    pub fn steps(&self, id: &str) -> String {
        self.key(&format!("steps:{id}"))
    }

    /// `wasmq:{q}:dead_steps`: the dead jobs whose steps count against the queue's
    /// `dead_step_bytes`, scored by when they died (dead_steps.lua).
    pub fn dead_steps(&self) -> String {
        self.key("dead_steps")
    }

    /// `wasmq:{q}:dead_steps_bytes`: the bytes counted for each job of `dead_steps`.
    pub fn dead_steps_bytes(&self) -> String {
        self.key("dead_steps_bytes")
    }

    /// `wasmq:{q}:dead_steps_meta`: the bytes counted in all (`total`) and the death time and
    /// id counted up to (`mark`, `last`).
    pub fn dead_steps_meta(&self) -> String {
        self.key("dead_steps_meta")
    }

    /// `wasmq:{q}:throttle:`: prefix of the handler throttle logs
    /// (`throttle:<handler length>:<handler>:<group>`, see throttle.lua).
    pub fn throttle_prefix(&self) -> String {
        self.key("throttle:")
    }

    /// `wasmq:{q}:dedupe:`: prefix of the dedupe keys (`dedupe:<key>`, the id of the job that
    /// took the key, expiring after its TTL; see enqueue.lua).
    pub fn dedupe_prefix(&self) -> String {
        self.key("dedupe:")
    }

    /// `wasmq:{q}:debounce:`: prefix of the debounce keys (`debounce:<key>`, the id of the
    /// key's pending job; see enqueue.lua).
    pub fn debounce_prefix(&self) -> String {
        self.key("debounce:")
    }

    /// `wasmq:{q}:outbox`: the parents whose child jobs are still to be delivered, scored by
    /// when they completed (ms).
    pub fn outbox(&self) -> String {
        self.key("outbox")
    }

    /// `wasmq:{q}:outbox:<id>`: the child jobs of one completed parent, to be delivered (JSON).
    pub fn outbox_entry(&self, id: &str) -> String {
        self.key(&format!("outbox:{id}"))
    }
}

/// A key of a queue by its role, as a script's header names it. Each transition's table
/// (`scripts.rs`, beside its Lua body) lists the keys it takes in `KEYS` order, and
/// [`QueueKeys::get`] names them; a test reads every script's header and checks that the
/// table matches it position by position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key {
    JobPrefix,
    Config,
    Waiting,
    Delayed,
    Active,
    Retry,
    Completed,
    Dead,
    Seq,
    Events,
    Wake,
    Rate,
    GroupPrefix,
    Groups,
    StepsPrefix,
    Outbox,
    Alerts,
    ThrottlePrefix,
    DedupePrefix,
    DebouncePrefix,
    DeadSteps,
    DeadStepsBytes,
    DeadStepsMeta,
    /// The pub/sub channel a cancel of a running job is published on (`cancel.lua`).
    CancelChannel,
    /// The set of the state a call lists (`list.lua`): the call says which
    /// ([`super::scripts::Call::listing`]).
    Listed,
}

impl Key {
    /// The words a script's header uses for this key (`KEYS[n] <words>`).
    #[cfg(test)]
    pub(crate) fn header_name(self) -> &'static str {
        match self {
            Key::JobPrefix => "job prefix",
            Key::Config => "config",
            Key::Waiting => "waiting",
            Key::Delayed => "delayed",
            Key::Active => "active",
            Key::Retry => "retry",
            Key::Completed => "completed",
            Key::Dead => "dead",
            Key::Seq => "seq",
            Key::Events => "events",
            Key::Wake => "wake",
            Key::Rate => "rate",
            Key::GroupPrefix => "group prefix",
            Key::Groups => "groups",
            Key::StepsPrefix => "steps prefix",
            Key::Outbox => "outbox",
            Key::Alerts => "alerts",
            Key::ThrottlePrefix => "throttle prefix",
            Key::DedupePrefix => "dedupe prefix",
            Key::DebouncePrefix => "debounce prefix",
            Key::DeadSteps => "dead_steps",
            Key::DeadStepsBytes => "dead_steps_bytes",
            Key::DeadStepsMeta => "dead_steps_meta",
            Key::CancelChannel => "cancel channel",
            Key::Listed => "the state's set",
        }
    }
}

impl QueueKeys {
    /// The name of the key in `role` (`listed`: the state a `list` call reads; the waiting set
    /// when a call without one names [`Key::Listed`], which no table but `list`'s does).
    pub(crate) fn get(&self, role: Key, listed: Option<JobState>) -> String {
        match role {
            Key::JobPrefix => self.job_prefix(),
            Key::Config => self.config(),
            Key::Waiting => self.waiting(),
            Key::Delayed => self.delayed(),
            Key::Active => self.active(),
            Key::Retry => self.retry(),
            Key::Completed => self.completed(),
            Key::Dead => self.dead(),
            Key::Seq => self.seq(),
            Key::Events => self.events(),
            Key::Wake => self.wake(),
            Key::Rate => self.rate(),
            Key::GroupPrefix => self.group_prefix(),
            Key::Groups => self.groups(),
            Key::StepsPrefix => self.steps_prefix(),
            Key::Outbox => self.outbox(),
            Key::Alerts => self.alerts(),
            Key::ThrottlePrefix => self.throttle_prefix(),
            Key::DedupePrefix => self.dedupe_prefix(),
            Key::DebouncePrefix => self.debounce_prefix(),
            Key::DeadSteps => self.dead_steps(),
            Key::DeadStepsBytes => self.dead_steps_bytes(),
            Key::DeadStepsMeta => self.dead_steps_meta(),
            Key::CancelChannel => self.cancel_channel(),
            Key::Listed => self.state(listed.unwrap_or(JobState::Waiting)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_key_of_a_queue_shares_its_hash_tag() {
        let keys = QueueKeys::new("emails").unwrap();
        assert_eq!(keys.waiting(), "wasmq:{emails}:waiting");
        assert_eq!(keys.job("j1"), "wasmq:{emails}:job:j1");
        assert_eq!(keys.job_prefix(), "wasmq:{emails}:job:");
        assert_eq!(keys.group_prefix(), "wasmq:{emails}:g:");
        assert_eq!(keys.group_waiting("t1"), "wasmq:{emails}:g:t1:waiting");
        for key in [
            keys.config(),
            keys.seq(),
            keys.events(),
            keys.wake(),
            keys.dead(),
            keys.rate(),
            keys.groups(),
            keys.alerts(),
            keys.group_waiting("tenant-42"),
            keys.group_rate("tenant-42"),
            keys.group_slots("tenant-42"),
            keys.steps("j1"),
            keys.outbox(),
            keys.outbox_entry("j1"),
            keys.cancel_channel(),
        ] {
            assert!(key.starts_with("wasmq:{emails}:"), "{key}");
        }
    }

    #[test]
    fn a_queue_name_with_braces_is_refused() {
        assert!(matches!(
            QueueKeys::new("a}b"),
            Err(QueueError::InvalidQueue(_))
        ));
    }
}
