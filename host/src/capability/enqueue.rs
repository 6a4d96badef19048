//! Child jobs: where a handler version may enqueue them, and whether the ids it gives them are
//! kept as given (docs/capabilities.md, "Child jobs").
//!
//! Without a grant, a handler's children go only into the queue of the job that asks (any
//! handler there), and an id the handler gives is namespaced by the parent
//! (`runtime::namespaced_child_id`), so that no child can take an id a producer will use.
//! `--may-enqueue QUEUE/HANDLER` (or `QUEUE/*`, any handler of QUEUE) lets children go to
//! another queue; `--may-enqueue-raw-ids QUEUE/HANDLER` does that too and keeps the ids the
//! handler gives as they are (for a handler that must enqueue under a producer's ids).
//! [`EnqueueRules::check`] is the one place these grants are checked (the runtime's
//! `workflow.enqueue` calls it for every child).

/// Most `--may-enqueue` and `--may-enqueue-raw-ids` grants of one handler version, together.
pub const MAX_ENQUEUE_GRANTS: usize = 256;

/// One grant: a queue and a handler of it (`None`: any).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    queue: String,
    handler: Option<String>,
}

impl Target {
    /// `QUEUE/HANDLER` or `QUEUE/*`. A queue name has no `/`, so the first one splits; a
    /// handler name may hold any printable character, and `*` alone means any handler.
    fn parse(text: &str) -> Result<Target, String> {
        let (queue, handler) = text.split_once('/').ok_or_else(|| {
            format!("may-enqueue {text:?}: expected QUEUE/HANDLER (or QUEUE/* for any handler)")
        })?;
        crate::queue::validate_queue_name(queue)
            .map_err(|why| format!("may-enqueue {text:?}: {why}"))?;
        let handler = match handler {
            "*" => None,
            name => {
                crate::queue::validate_handler_name(name)
                    .map_err(|why| format!("may-enqueue {text:?}: {why}"))?;
                Some(name.to_string())
            }
        };
        Ok(Target {
            queue: queue.to_string(),
            handler,
        })
    }

    fn covers(&self, queue: &str, handler: &str) -> bool {
        self.queue == queue && self.handler.as_deref().is_none_or(|h| h == handler)
    }
}

/// How the id a handler gives a child is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildIds {
    /// Under the parent: `<queue>/<parent id>/<given id>` (hashed when long).
    Namespaced,
    /// As the handler gave it (a `--may-enqueue-raw-ids` grant).
    Raw,
}

/// A handler version's child-job grants, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnqueueRules {
    queues: Vec<Target>,
    raw_ids: Vec<Target>,
}

impl EnqueueRules {
    /// Parses the `may_enqueue` and `may_enqueue_raw_ids` grants of a version.
    pub fn parse(may_enqueue: &[String], raw_ids: &[String]) -> Result<EnqueueRules, String> {
        if may_enqueue.len() + raw_ids.len() > MAX_ENQUEUE_GRANTS {
            return Err(format!(
                "at most {MAX_ENQUEUE_GRANTS} may-enqueue grants, got {}",
                may_enqueue.len() + raw_ids.len()
            ));
        }
        let parse_all = |items: &[String]| -> Result<Vec<Target>, String> {
            items.iter().map(|item| Target::parse(item)).collect()
        };
        Ok(EnqueueRules {
            queues: parse_all(may_enqueue)?,
            raw_ids: parse_all(raw_ids)?,
        })
    }

    /// Whether a job of queue `own` may enqueue a child for `handler` in `queue`, and how the
    /// id it gives that child is kept; the error says which grant is missing.
    pub fn check(&self, own: &str, queue: &str, handler: &str) -> Result<ChildIds, String> {
        if self.raw_ids.iter().any(|t| t.covers(queue, handler)) {
            return Ok(ChildIds::Raw);
        }
        if queue == own || self.queues.iter().any(|t| t.covers(queue, handler)) {
            return Ok(ChildIds::Namespaced);
        }
        Err(format!(
            "this handler may not enqueue child jobs for handler {handler:?} in queue \
             {queue:?}: only into its own queue ({own:?}) unless its deployment grants it \
             (--may-enqueue {queue}/{handler} or {queue}/*)"
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn rules(may: &[&str], raw: &[&str]) -> EnqueueRules {
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        EnqueueRules::parse(&owned(may), &owned(raw)).unwrap()
    }

    #[test]
    fn without_grants_children_go_only_to_the_own_queue_with_namespaced_ids() {
        let none = EnqueueRules::default();
        assert_eq!(
            none.check("orders", "orders", "any"),
            Ok(ChildIds::Namespaced)
        );
        let err = none.check("orders", "payments", "charge").unwrap_err();
        assert!(err.contains("--may-enqueue payments/charge"), "{err}");
    }

    #[test]
    fn a_grant_names_a_handler_or_every_handler_of_a_queue() {
        let r = rules(&["payments/charge", "mail/*"], &[]);
        assert_eq!(
            r.check("orders", "payments", "charge"),
            Ok(ChildIds::Namespaced)
        );
        assert!(r.check("orders", "payments", "refund").is_err());
        assert_eq!(r.check("orders", "mail", "send"), Ok(ChildIds::Namespaced));
        assert!(r.check("orders", "mailer", "send").is_err());
    }

    #[test]
    fn raw_ids_need_their_own_grant_which_also_opens_the_queue() {
        let r = rules(&["payments/charge"], &["ledger/post", "orders/*"]);
        assert_eq!(r.check("orders", "ledger", "post"), Ok(ChildIds::Raw));
        assert_eq!(r.check("orders", "orders", "x"), Ok(ChildIds::Raw));
        assert_eq!(
            r.check("orders", "payments", "charge"),
            Ok(ChildIds::Namespaced)
        );
    }

    #[test]
    fn bad_grants_are_refused_with_the_reason() {
        let bad = |s: &str| EnqueueRules::parse(&[s.to_string()], &[]).unwrap_err();
        assert!(bad("payments").contains("QUEUE/HANDLER"));
        assert!(bad("pay ments/x").contains("queue name"));
        assert!(bad("payments/").contains("handler name"));
        // A handler name may hold '/': only the first one splits.
        assert_eq!(
            rules(&["q/a/b"], &[]).check("o", "q", "a/b"),
            Ok(ChildIds::Namespaced)
        );
    }
}
