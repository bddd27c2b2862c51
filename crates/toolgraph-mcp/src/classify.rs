//! From a tool's MCP annotations and the operator's override to a [`Classification`]: its
//! [`SafetyClass`], whether a retry is safe, its concurrency cap, the resource mappings it
//! declares, and *why*, in words.
//!
//! Annotations are hints from a server we do not trust, so every missing hint is read the
//! conservative way:
//!
//! | hints | class |
//! |---|---|
//! | `readOnlyHint: true` | [`SafetyClass::Reader`] |
//! | `readOnlyHint` false/absent and `destructiveHint: false` | [`SafetyClass::Writer`] |
//! | anything else (destructive, or no hints at all) | [`SafetyClass::Exclusive`] |
//!
//! With `resources` mappings in the override (and no `class`), the mappings say what a
//! call touches: the class becomes Writer when a mapping writes, else Reader, and the
//! mapped keys replace the server-wide access. `idempotentHint: true` makes a Reader or
//! Writer retryable, and a Reader is retryable anyway (the MCP spec gives `idempotentHint`
//! meaning only for tools that write); an Exclusive tool is never retried unless the
//! operator says `idempotent = true`. `openWorldHint` is only recorded in `why`. Every field
//! of the override wins over the hints.
//!
//! For approvals the class maps to an `ApprovalClass`: Reader → `read_only`, Writer →
//! `write`, Exclusive → `destructive` (`SafetyClass::approval_class`).
//!
//! Invariant: pure — no I/O, no clock, no runtime.

use crate::config::{McpToolOverride, ResourceMapping, SafetyClass};
use toolgraph_core::Access;

/// A tool's MCP annotation hints (each `None` when the server did not send it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Hints {
    /// `readOnlyHint`.
    pub read_only: Option<bool>,
    /// `destructiveHint`.
    pub destructive: Option<bool>,
    /// `idempotentHint`.
    pub idempotent: Option<bool>,
    /// `openWorldHint`.
    pub open_world: Option<bool>,
}

impl Hints {
    pub(crate) fn of(annotations: Option<&rmcp::model::ToolAnnotations>) -> Option<Hints> {
        annotations.map(|a| Hints {
            read_only: a.read_only_hint,
            destructive: a.destructive_hint,
            idempotent: a.idempotent_hint,
            open_world: a.open_world_hint,
        })
    }

    fn is_empty(&self) -> bool {
        *self == Hints::default()
    }

    /// The hints that were sent, e.g. `readOnlyHint=true, openWorldHint=false`.
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        let mut push = |name: &str, v: Option<bool>| {
            if let Some(v) = v {
                parts.push(format!("{name}={v}"));
            }
        };
        push("readOnlyHint", self.read_only);
        push("destructiveHint", self.destructive);
        push("idempotentHint", self.idempotent);
        push("openWorldHint", self.open_world);
        parts.join(", ")
    }
}

/// What the scheduler may assume about one tool, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    /// The safety class.
    pub class: SafetyClass,
    /// Retryable on transient failures.
    pub idempotent: bool,
    /// Calls of the tool at once, at most (the operator's).
    pub max_concurrency: Option<usize>,
    /// The operator's resource mappings in force (empty for an Exclusive tool).
    pub resources: Vec<ResourceMapping>,
    /// Why, e.g. `readOnlyHint=true`, `no hints: conservative`, `operator override: class=writer`.
    pub why: String,
}

/// Classifies a tool from its hints (`None`: the server sent no annotations) and the
/// operator's override.
///
/// ```
/// use toolgraph_mcp::{classify, Hints, SafetyClass};
///
/// let read_only = Hints { read_only: Some(true), ..Hints::default() };
/// let c = classify(Some(read_only), None);
/// assert_eq!(c.class, SafetyClass::Reader);
/// assert_eq!(c.why, "readOnlyHint=true; retryable: read-only");
/// assert_eq!(classify(None, None).class, SafetyClass::Exclusive);
/// ```
pub fn classify(hints: Option<Hints>, overrides: Option<&McpToolOverride>) -> Classification {
    let hints = hints.filter(|h| !h.is_empty());
    let default_override = McpToolOverride::default();
    let o = overrides.unwrap_or(&default_override);
    let mut why = Vec::new();

    let (annotated, annotated_why) = from_hints(hints.as_ref());
    let class = match (o.class, o.resources.is_empty()) {
        (Some(class), _) => {
            why.push(format!("operator override: class={class}"));
            class
        }
        (None, false) => {
            let writes = o.resources.iter().any(|m| m.access != Access::Read);
            why.push(format!(
                "operator resource mapping: {}",
                describe_mappings(&o.resources)
            ));
            if writes {
                SafetyClass::Writer
            } else {
                SafetyClass::Reader
            }
        }
        (None, true) => {
            why.push(annotated_why.clone());
            annotated
        }
    };
    if why.first() != Some(&annotated_why) {
        match &hints {
            Some(h) => why.push(format!("annotations: {}", h.describe())),
            None => why.push("annotations: none".into()),
        }
    }
    let resources = if class == SafetyClass::Exclusive {
        if !o.resources.is_empty() {
            why.push("resource mapping unused: an exclusive tool runs alone".into());
        }
        Vec::new()
    } else {
        o.resources.clone()
    };

    let hinted_idempotent = hints.as_ref().and_then(|h| h.idempotent) == Some(true);
    let idempotent = match o.idempotent {
        Some(v) => {
            why.push(format!("operator override: idempotent={v}"));
            v
        }
        None if class == SafetyClass::Exclusive => {
            if hinted_idempotent {
                why.push("idempotentHint ignored: exclusive".into());
            }
            false
        }
        None if hinted_idempotent => {
            why.push("retryable: idempotentHint=true".into());
            true
        }
        None if class == SafetyClass::Reader => {
            why.push("retryable: read-only".into());
            true
        }
        None => false,
    };
    if o.class.is_none()
        && o.resources.is_empty()
        && let Some(v) = hints.as_ref().and_then(|h| h.open_world)
    {
        why.push(format!("openWorldHint={v}"));
    }
    if let Some(n) = o.max_concurrency {
        why.push(format!("operator override: max_concurrency={n}"));
    }
    Classification {
        class,
        idempotent,
        max_concurrency: o.max_concurrency,
        resources,
        why: why.join("; "),
    }
}

/// The class the hints alone give, and why.
fn from_hints(hints: Option<&Hints>) -> (SafetyClass, String) {
    let Some(h) = hints else {
        return (SafetyClass::Exclusive, "no hints: conservative".into());
    };
    if h.read_only == Some(true) {
        return (SafetyClass::Reader, "readOnlyHint=true".into());
    }
    let read_only = match h.read_only {
        Some(v) => format!("readOnlyHint={v}"),
        None => "readOnlyHint absent".into(),
    };
    match h.destructive {
        Some(false) => (
            SafetyClass::Writer,
            format!("{read_only}, destructiveHint=false"),
        ),
        Some(true) => (
            SafetyClass::Exclusive,
            format!("{read_only}, destructiveHint=true"),
        ),
        None => (
            SafetyClass::Exclusive,
            format!("{read_only}, destructiveHint absent: conservative"),
        ),
    }
}

fn describe_mappings(mappings: &[ResourceMapping]) -> String {
    mappings
        .iter()
        .map(|m| {
            let access = match m.access {
                Access::Read => "read",
                Access::Write => "write",
                Access::IntentWrite => "intent_write",
            };
            format!("{} → {access} {}", m.arg, m.kind)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::ToolAnnotations;

    fn annotations(
        read_only: Option<bool>,
        destructive: Option<bool>,
        idempotent: Option<bool>,
        open_world: Option<bool>,
    ) -> ToolAnnotations {
        let mut a = ToolAnnotations::default();
        a.read_only_hint = read_only;
        a.destructive_hint = destructive;
        a.idempotent_hint = idempotent;
        a.open_world_hint = open_world;
        a
    }

    fn of(a: &ToolAnnotations) -> Classification {
        classify(Hints::of(Some(a)), None)
    }

    fn mapping(arg: &str, access: Access, kind: &str) -> ResourceMapping {
        ResourceMapping {
            arg: arg.into(),
            access,
            kind: kind.into(),
        }
    }

    #[test]
    fn every_combination_of_read_only_and_destructive_hints() {
        use SafetyClass::*;
        let values = [None, Some(false), Some(true)];
        for ro in values {
            for de in values {
                let c = of(&annotations(ro, de, None, None));
                let expected = match (ro, de) {
                    (Some(true), _) => Reader,
                    (_, Some(false)) => Writer,
                    _ => Exclusive,
                };
                assert_eq!(
                    c.class, expected,
                    "readOnly={ro:?} destructive={de:?}: {}",
                    c.why
                );
            }
        }
    }

    #[test]
    fn why_says_which_hint_decided() {
        let c = of(&annotations(Some(true), None, None, Some(false)));
        assert_eq!(
            c.why,
            "readOnlyHint=true; retryable: read-only; openWorldHint=false"
        );
        let c = of(&annotations(Some(false), Some(false), Some(false), None));
        assert_eq!(c.why, "readOnlyHint=false, destructiveHint=false");
        assert!(!c.idempotent);
        let c = of(&annotations(
            Some(false),
            Some(true),
            Some(true),
            Some(true),
        ));
        assert_eq!(c.class, SafetyClass::Exclusive);
        assert_eq!(
            c.why,
            "readOnlyHint=false, destructiveHint=true; idempotentHint ignored: exclusive; openWorldHint=true"
        );
        let c = of(&annotations(None, None, None, None));
        assert_eq!(
            c.why, "no hints: conservative",
            "empty annotations are no hints"
        );
        let c = of(&annotations(Some(false), None, None, None));
        assert_eq!(
            c.why,
            "readOnlyHint=false, destructiveHint absent: conservative"
        );
    }

    #[test]
    fn absent_annotations_are_exclusive_and_not_retryable() {
        let c = classify(None, None);
        assert_eq!(c.class, SafetyClass::Exclusive);
        assert!(!c.idempotent);
        assert!(c.resources.is_empty());
        assert_eq!(c.why, "no hints: conservative");
    }

    #[test]
    fn idempotent_hint_counts_for_readers_and_writers_only() {
        let writer = of(&annotations(None, Some(false), Some(true), None));
        assert_eq!(writer.class, SafetyClass::Writer);
        assert!(writer.idempotent);
        assert!(
            writer.why.contains("retryable: idempotentHint=true"),
            "{}",
            writer.why
        );
        let reader = of(&annotations(Some(true), None, Some(false), None));
        assert!(reader.idempotent, "a read is safe to repeat");
        let exclusive = of(&annotations(None, None, Some(true), None));
        assert!(!exclusive.idempotent);
    }

    #[test]
    fn operator_override_wins() {
        let destructive = annotations(Some(false), Some(true), Some(true), None);
        let o = McpToolOverride {
            class: Some(SafetyClass::Reader),
            max_concurrency: Some(2),
            ..Default::default()
        };
        let c = classify(Hints::of(Some(&destructive)), Some(&o));
        assert_eq!(c.class, SafetyClass::Reader);
        assert_eq!(c.max_concurrency, Some(2));
        assert!(c.idempotent, "hint counts once the class is not exclusive");
        assert_eq!(
            c.why,
            "operator override: class=reader; annotations: readOnlyHint=false, destructiveHint=true, idempotentHint=true; retryable: idempotentHint=true; operator override: max_concurrency=2"
        );

        let o = McpToolOverride {
            class: Some(SafetyClass::Exclusive),
            idempotent: Some(true),
            ..Default::default()
        };
        let read_only = annotations(Some(true), None, None, None);
        let c = classify(Hints::of(Some(&read_only)), Some(&o));
        assert_eq!(c.class, SafetyClass::Exclusive);
        assert!(c.idempotent, "the operator may vouch for an exclusive tool");
        assert!(
            c.why.contains("operator override: idempotent=true"),
            "{}",
            c.why
        );

        let o = McpToolOverride {
            idempotent: Some(false),
            ..Default::default()
        };
        let c = classify(Hints::of(Some(&read_only)), Some(&o));
        assert_eq!(c.class, SafetyClass::Reader);
        assert!(!c.idempotent);
    }

    #[test]
    fn resource_mappings_make_an_exclusive_tool_parallel() {
        let destructive = annotations(Some(false), Some(true), Some(true), None);
        let o = McpToolOverride {
            resources: vec![mapping("path", Access::Write, "file")],
            ..Default::default()
        };
        let c = classify(Hints::of(Some(&destructive)), Some(&o));
        assert_eq!(c.class, SafetyClass::Writer);
        assert_eq!(c.resources, o.resources);
        assert!(c.idempotent);
        assert_eq!(
            c.why,
            "operator resource mapping: path → write file; annotations: readOnlyHint=false, destructiveHint=true, idempotentHint=true; retryable: idempotentHint=true"
        );

        let o = McpToolOverride {
            resources: vec![mapping("path", Access::Read, "file")],
            ..Default::default()
        };
        let c = classify(None, Some(&o));
        assert_eq!(c.class, SafetyClass::Reader);
        assert!(
            c.why
                .starts_with("operator resource mapping: path → read file; annotations: none"),
            "{}",
            c.why
        );

        let o = McpToolOverride {
            class: Some(SafetyClass::Exclusive),
            resources: vec![mapping("path", Access::Write, "file")],
            ..Default::default()
        };
        let c = classify(None, Some(&o));
        assert_eq!(c.class, SafetyClass::Exclusive);
        assert!(c.resources.is_empty());
        assert!(c.why.contains("resource mapping unused"), "{}", c.why);
    }
}
