//! [`ToolSet`]: the registry of tools an executor can run, by name.
//!
//! Registration compiles each tool's parameter schema once, so validating a batch costs one
//! schema check per call and nothing for tools that accept any object.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use serde_json::Value;

use crate::tool::{CallContext, FnTool, Tool, ToolError, ToolSpec};

/// Why a tool could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolSetError {
    /// Another tool has that name.
    #[error("a tool named \"{0}\" is already registered")]
    Duplicate(String),
    /// The name is empty.
    #[error("a tool needs a non-empty name")]
    EmptyName,
    /// No tool has that name.
    #[error("no tool named \"{0}\"")]
    Unknown(String),
    /// The parameter schema does not compile.
    #[error("tool \"{name}\": invalid parameter schema: {message}")]
    InvalidSchema {
        /// The tool.
        name: String,
        /// The compiler's message.
        message: String,
    },
    /// A declared trait cannot work (a negative cost, a limit of 0).
    #[error("tool \"{name}\": {field} {message}")]
    InvalidTrait {
        /// The tool.
        name: String,
        /// The trait, e.g. `cpu`.
        field: &'static str,
        /// What is wrong.
        message: &'static str,
    },
}

/// Checks what a tool declares about itself: costs finite and ≥ 0, a concurrency limit of
/// at least 1 (0 would be a tool that can never run, which is a configuration error).
fn check_traits(name: &str, traits: &crate::tool::ToolTraits) -> Result<(), ToolSetError> {
    let bad = |field, message| {
        Err(ToolSetError::InvalidTrait {
            name: name.to_owned(),
            field,
            message,
        })
    };
    if !(traits.cost.cpu.is_finite() && traits.cost.cpu >= 0.0) {
        return bad("cpu", "must be a finite number ≥ 0");
    }
    if traits.max_concurrency == Some(0) {
        return bad("max_concurrency", "must be at least 1");
    }
    Ok(())
}

/// One registered tool.
#[derive(Clone)]
pub struct ToolEntry {
    /// The tool.
    pub tool: Arc<dyn Tool>,
    validator: Option<Arc<jsonschema::Validator>>,
}

impl ToolEntry {
    /// The schema violations of `args`: `(JSON pointer, message)` pairs. Empty when valid.
    pub fn schema_violations(&self, args: &Value) -> Vec<(String, String)> {
        let Some(v) = &self.validator else {
            return Vec::new();
        };
        v.iter_errors(args)
            .map(|e| (e.instance_path().to_string(), e.to_string()))
            .collect()
    }

    /// True when the tool declares a schema stricter than "any object".
    pub fn has_schema(&self) -> bool {
        self.validator.is_some()
    }
}

/// The tools an executor can run.
#[derive(Clone, Default)]
pub struct ToolSet {
    entries: Vec<ToolEntry>,
    by_name: HashMap<String, usize>,
}

impl ToolSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a tool.
    pub fn register(&mut self, tool: impl Tool) -> Result<&mut Self, ToolSetError> {
        self.register_arc(Arc::new(tool))
    }

    /// Registers a shared tool.
    pub fn register_arc(&mut self, tool: Arc<dyn Tool>) -> Result<&mut Self, ToolSetError> {
        let spec = tool.spec();
        let name = spec.name.clone();
        if name.is_empty() {
            return Err(ToolSetError::EmptyName);
        }
        if self.by_name.contains_key(&name) {
            return Err(ToolSetError::Duplicate(name));
        }
        check_traits(&name, &spec.traits)?;
        let validator = if accepts_any_object(&spec.parameters) {
            None
        } else {
            let compiled = jsonschema::validator_for(&spec.parameters).map_err(|e| {
                ToolSetError::InvalidSchema {
                    name: name.clone(),
                    message: e.to_string(),
                }
            })?;
            Some(Arc::new(compiled))
        };
        self.by_name.insert(name, self.entries.len());
        self.entries.push(ToolEntry { tool, validator });
        Ok(self)
    }

    /// Registers an async closure as a parallel-safe tool taking any object.
    ///
    /// ```
    /// # use toolgraph_core::ToolSet;
    /// let mut tools = ToolSet::new();
    /// tools.register_fn("add", |args, _ctx| async move { Ok(serde_json::json!(args["a"].as_i64().unwrap_or(0) + 1)) }).unwrap();
    /// assert!(tools.get("add").is_some());
    /// ```
    pub fn register_fn<F, Fut>(&mut self, name: &str, f: F) -> Result<&mut Self, ToolSetError>
    where
        F: Fn(Value, CallContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, ToolError>> + Send + 'static,
    {
        self.register(FnTool::new(ToolSpec::new(name), f))
    }

    /// Replaces what tool `name` declares about itself with the operator's settings, which
    /// always win over the tool's own.
    pub fn apply_override(
        &mut self,
        name: &str,
        settings: &ToolOverride,
    ) -> Result<(), ToolSetError> {
        let index = self
            .index_of(name)
            .ok_or_else(|| ToolSetError::Unknown(name.to_owned()))?;
        let entry = &mut self.entries[index];
        let mut spec = entry.tool.spec().clone();
        let t = &mut spec.traits;
        if let Some(v) = settings.parallel_safe {
            t.parallel_safe = v;
        }
        if let Some(v) = settings.max_concurrency {
            t.max_concurrency = Some(v);
        }
        if let Some(v) = settings.idempotent {
            t.idempotent = v;
        }
        if let Some(v) = settings.blocking {
            t.blocking = v;
        }
        if let Some(v) = settings.timeout_ms {
            t.timeout_ms = Some(v);
        }
        if let Some(v) = settings.cpu {
            t.cost.cpu = v;
        }
        if let Some(v) = settings.memory_mb {
            t.cost.memory_mb = v;
        }
        check_traits(name, t)?;
        entry.tool = Arc::new(Overridden {
            inner: entry.tool.clone(),
            spec,
            idempotent: settings.idempotent,
        });
        Ok(())
    }

    /// Lets `alias` name the tool registered as `target` (a plain name for a namespaced
    /// tool such as `fs.read_file`). Calls by either name are the same tool, with the same
    /// limits; errors if `alias` is taken or `target` unknown.
    pub fn register_alias(&mut self, alias: &str, target: &str) -> Result<(), ToolSetError> {
        let index = self
            .index_of(target)
            .ok_or_else(|| ToolSetError::Unknown(target.to_owned()))?;
        if self.by_name.contains_key(alias) {
            return Err(ToolSetError::Duplicate(alias.to_owned()));
        }
        self.by_name.insert(alias.to_owned(), index);
        Ok(())
    }

    /// The tool's position, by name.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The tool by name.
    pub fn get(&self, name: &str) -> Option<&ToolEntry> {
        self.index_of(name).map(|i| &self.entries[i])
    }

    /// The tool at a position.
    pub fn entry(&self, index: usize) -> &ToolEntry {
        &self.entries[index]
    }

    /// Every tool, in registration order.
    pub fn entries(&self) -> &[ToolEntry] {
        &self.entries
    }

    /// The number of tools.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no tool is registered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The tool names, in registration order.
    pub fn names(&self) -> Vec<&str> {
        self.entries
            .iter()
            .map(|e| e.tool.spec().name.as_str())
            .collect()
    }
}

/// An operator's settings for one tool; each set field wins over what the tool declares.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolOverride {
    /// False makes the tool exclusive (runs alone); true lets it run beside others.
    pub parallel_safe: Option<bool>,
    /// Calls of this tool at once, at most.
    pub max_concurrency: Option<usize>,
    /// Whether calls may be retried (for every call, whatever its arguments).
    pub idempotent: Option<bool>,
    /// Run on the blocking pool.
    pub blocking: Option<bool>,
    /// The tool's default timeout.
    pub timeout_ms: Option<u64>,
    /// CPU units one call costs.
    pub cpu: Option<f64>,
    /// Memory (MiB) one call costs.
    pub memory_mb: Option<u64>,
    /// A token bucket for this tool's attempts: tokens per second (the executor's
    /// `per_tool_rate_limits` entry is built from it and `burst`; not a trait of the tool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<f64>,
    /// The bucket's size (default 1) when `requests_per_second` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// `false`: this tool's calls are never cached (`[cache]`), even when idempotent.
    pub cache: Option<bool>,
    /// How long this tool's results stay cached, in ms (default: `[cache] ttl_ms`).
    pub cache_ttl_ms: Option<u64>,
    /// The tool's version, part of its cache keys: bump it when the tool's results change.
    pub version: Option<String>,
}

impl ToolOverride {
    /// The token bucket these settings ask for, if any.
    pub fn rate_limit(&self) -> Option<crate::RateLimit> {
        Some(crate::RateLimit {
            requests_per_second: self.requests_per_second?,
            burst: self.burst.unwrap_or(1),
        })
    }
}

/// A tool seen through an operator's overrides.
struct Overridden {
    inner: Arc<dyn Tool>,
    spec: ToolSpec,
    idempotent: Option<bool>,
}

impl Tool for Overridden {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn resources(&self, args: &Value) -> Vec<crate::tool::ResourceAccess> {
        self.inner.resources(args)
    }

    fn is_idempotent(&self, args: &Value) -> bool {
        self.idempotent
            .unwrap_or_else(|| self.inner.is_idempotent(args))
    }

    fn call<'a>(
        &'a self,
        args: std::sync::Arc<Value>,
        ctx: CallContext,
    ) -> crate::tool::ToolFuture<'a> {
        self.inner.call(args, ctx)
    }
}

/// True for schemas that accept any object (nothing to check beyond "is an object").
fn accepts_any_object(schema: &Value) -> bool {
    let Some(obj) = schema.as_object() else {
        return false;
    };
    obj.iter().all(|(k, v)| match k.as_str() {
        "type" => v == "object",
        "title" | "description" | "$schema" | "$id" => true,
        "properties" => v.as_object().is_some_and(|p| p.is_empty()),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn duplicate_names_and_bad_schemas_are_refused() {
        let mut set = ToolSet::new();
        set.register_fn("a", |_, _| async { Ok(Value::Null) })
            .expect("first");
        assert_eq!(
            set.register_fn("a", |_, _| async { Ok(Value::Null) }).err(),
            Some(ToolSetError::Duplicate("a".into()))
        );
        let bad = FnTool::new(
            ToolSpec::new("b").parameters(json!({"type": 12})),
            |_, _| async { Ok(Value::Null) },
        );
        assert!(matches!(
            set.register(bad),
            Err(ToolSetError::InvalidSchema { .. })
        ));
    }

    #[test]
    fn operator_overrides_win_and_unknown_names_are_refused() {
        let mut set = ToolSet::new();
        let spec = ToolSpec::new("t").idempotent().max_concurrency(8);
        set.register(FnTool::new(spec, |_, _| async { Ok(Value::Null) }))
            .expect("ok");
        let settings = ToolOverride {
            parallel_safe: Some(false),
            idempotent: Some(false),
            max_concurrency: Some(2),
            ..Default::default()
        };
        set.apply_override("t", &settings).expect("known tool");
        let entry = set.get("t").expect("still registered");
        let traits = &entry.tool.spec().traits;
        assert!(!traits.parallel_safe && !traits.idempotent);
        assert_eq!(traits.max_concurrency, Some(2));
        assert!(!entry.tool.is_idempotent(&json!({})));
        assert_eq!(
            set.apply_override("ghost", &settings),
            Err(ToolSetError::Unknown("ghost".into()))
        );
    }

    #[test]
    fn costs_and_limits_that_cannot_work_are_refused_by_tool_and_field() {
        let noop = |spec| FnTool::new(spec, |_, _| async { Ok(Value::Null) });
        let mut set = ToolSet::new();
        let negative = set.register(noop(ToolSpec::new("neg").cost(-5.0, 0)));
        assert!(
            matches!(negative, Err(ToolSetError::InvalidTrait { ref name, field: "cpu", .. }) if name == "neg"),
            "{:?}",
            negative.err()
        );
        let zero = set.register(noop(ToolSpec::new("zero").max_concurrency(0)));
        assert!(matches!(
            zero,
            Err(ToolSetError::InvalidTrait {
                field: "max_concurrency",
                ..
            })
        ));
        set.register(noop(ToolSpec::new("t"))).expect("ok");
        for cpu in [f64::NAN, f64::INFINITY, -0.5] {
            let settings = ToolOverride {
                cpu: Some(cpu),
                ..Default::default()
            };
            let err = set.apply_override("t", &settings).expect_err("refused");
            assert_eq!(
                err.to_string(),
                "tool \"t\": cpu must be a finite number ≥ 0",
                "{cpu}"
            );
        }
        let settings = ToolOverride {
            max_concurrency: Some(0),
            ..Default::default()
        };
        assert!(set.apply_override("t", &settings).is_err());
        assert_eq!(
            set.get("t").expect("kept").tool.spec().traits.cost.cpu,
            0.0,
            "a refused override changes nothing"
        );
    }

    #[test]
    fn aliases_name_the_same_tool() {
        let mut set = ToolSet::new();
        set.register_fn("fs.read", |_, _| async { Ok(Value::Null) })
            .expect("ok");
        set.register_alias("read", "fs.read").expect("alias");
        assert_eq!(set.index_of("read"), set.index_of("fs.read"));
        assert_eq!(set.len(), 1);
        assert_eq!(
            set.register_alias("read", "fs.read"),
            Err(ToolSetError::Duplicate("read".into()))
        );
        assert_eq!(
            set.register_alias("x", "nope"),
            Err(ToolSetError::Unknown("nope".into()))
        );
    }

    #[test]
    fn schema_violations_name_the_path() {
        let mut set = ToolSet::new();
        let spec = ToolSpec::new("t").parameters(json!({
            "type": "object",
            "properties": {"ms": {"type": "integer", "minimum": 0}},
            "required": ["ms"]
        }));
        set.register(FnTool::new(spec, |_, _| async { Ok(Value::Null) }))
            .expect("ok");
        let entry = set.get("t").expect("registered");
        assert!(entry.schema_violations(&json!({"ms": 5})).is_empty());
        let v = entry.schema_violations(&json!({"ms": "slow"}));
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].0, "/ms", "{v:?}");
        assert!(!entry.schema_violations(&json!({})).is_empty());
    }
}
