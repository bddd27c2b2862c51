//! The `${call_id}` reference syntax inside tool-call arguments.
//!
//! A string that is exactly `"${call_1}"` is replaced by call_1's JSON output, type
//! preserved; `"${call_1.items.0.url}"` by a path into it (numeric segments index arrays,
//! other segments are object keys). A reference inside a longer string is spliced in as
//! text (strings raw, other values as compact JSON). `$${` is a literal `${`.
//!
//! This module finds references ([`find_references`]), binds them to call positions and
//! rebuilds arguments from outputs ([`ArgumentTemplate::render`]). It never panics on input.

use std::fmt;

use serde_json::Value;

/// One step from an argument object's root to a string holding references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// An object key.
    Key(String),
    /// An array index.
    Index(usize),
}

/// A part of a templated string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part<R> {
    /// Text copied as is.
    Literal(String),
    /// A reference to another call's output.
    Ref(R),
}

/// A reference as written: the text between `${` and `}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawReference(pub String);

/// A reference bound to a call position, with the path into that call's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundReference {
    /// Position of the referenced call in the batch.
    pub call: usize,
    /// Path segments into its output.
    pub path: Vec<String>,
    /// The reference as written, for messages (`${call_1.items.0}`).
    pub text: String,
}

/// A string argument that holds references (or `$${` escapes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StringTemplate<R> {
    /// Where the string sits in the arguments.
    pub location: Vec<Step>,
    /// Its parts, in order.
    pub parts: Vec<Part<R>>,
}

impl<R> StringTemplate<R> {
    /// The reference when the string is exactly one reference (its output keeps its type).
    pub fn whole(&self) -> Option<&R> {
        match self.parts.as_slice() {
            [Part::Ref(r)] => Some(r),
            _ => None,
        }
    }

    /// The references in this string.
    pub fn references(&self) -> impl Iterator<Item = &R> {
        self.parts.iter().filter_map(|p| match p {
            Part::Ref(r) => Some(r),
            Part::Literal(_) => None,
        })
    }
}

/// A location in the arguments, in JSON-pointer form (`/items/0/url`), for messages.
pub fn pointer(location: &[Step]) -> String {
    let mut out = String::new();
    for step in location {
        out.push('/');
        match step {
            Step::Key(k) => out.push_str(&k.replace('~', "~0").replace('/', "~1")),
            Step::Index(i) => out.push_str(&i.to_string()),
        }
    }
    out
}

/// Finds every string in `args` that holds a reference or an escape.
///
/// Errors are messages about malformed references (unterminated, empty).
pub fn find_references(args: &Value) -> Result<Vec<StringTemplate<RawReference>>, Vec<String>> {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    let mut location = Vec::new();
    walk(args, &mut location, &mut found, &mut errors);
    if errors.is_empty() {
        Ok(found)
    } else {
        Err(errors)
    }
}

fn walk(
    value: &Value,
    location: &mut Vec<Step>,
    found: &mut Vec<StringTemplate<RawReference>>,
    errors: &mut Vec<String>,
) {
    match value {
        Value::String(s) if s.contains("${") => match parse_string(s) {
            Ok(parts) => found.push(StringTemplate {
                location: location.clone(),
                parts,
            }),
            Err(e) => errors.push(format!("at {}: {e}", pointer(location))),
        },
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                location.push(Step::Index(i));
                walk(item, location, found, errors);
                location.pop();
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                location.push(Step::Key(k.clone()));
                walk(v, location, found, errors);
                location.pop();
            }
        }
        _ => {}
    }
}

/// Splits one string into literal text and references.
pub fn parse_string(s: &str) -> Result<Vec<Part<RawReference>>, String> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut rest = s;
    while let Some(at) = rest.find("${") {
        if at > 0 && rest.as_bytes()[at - 1] == b'$' {
            // `$${` is an escaped `${`.
            literal.push_str(&rest[..at - 1]);
            literal.push_str("${");
            rest = &rest[at + 2..];
            continue;
        }
        literal.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("unterminated reference \"{}\"", &rest[at..]));
        };
        let inner = after[..end].trim();
        if inner.is_empty() {
            return Err("empty reference \"${}\"".into());
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(std::mem::take(&mut literal)));
        }
        parts.push(Part::Ref(RawReference(inner.to_owned())));
        rest = &after[end + 1..];
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        parts.push(Part::Literal(literal));
    }
    Ok(parts)
}

/// Binds a raw reference to a call position: the call id is the longest dot-separated
/// prefix that names a call (ids may contain dots), the rest is the path.
pub fn bind(raw: &RawReference, lookup: impl Fn(&str) -> Option<usize>) -> Option<BoundReference> {
    let text = &raw.0;
    let mut cut = text.len();
    loop {
        let candidate = &text[..cut];
        if let Some(call) = lookup(candidate) {
            let path = if cut >= text.len() {
                Vec::new()
            } else {
                text[cut + 1..].split('.').map(str::to_owned).collect()
            };
            return Some(BoundReference {
                call,
                path,
                text: format!("${{{text}}}"),
            });
        }
        cut = candidate.rfind('.')?;
    }
}

/// Follows `path` into `value`: numeric segments index arrays, others are object keys.
pub fn resolve_path<'v>(value: &'v Value, path: &[String]) -> Result<&'v Value, String> {
    let mut current = value;
    for (depth, seg) in path.iter().enumerate() {
        let here = || {
            if depth == 0 {
                "the output".to_owned()
            } else {
                format!("\"{}\"", path[..depth].join("."))
            }
        };
        current = match current {
            Value::Object(map) => map
                .get(seg)
                .ok_or_else(|| format!("{} has no key \"{seg}\"", here()))?,
            Value::Array(items) => {
                let index: usize = seg
                    .parse()
                    .map_err(|_| format!("{} is an array; \"{seg}\" is not an index", here()))?;
                items.get(index).ok_or_else(|| {
                    format!(
                        "index {index} is out of range: {} has {} items",
                        here(),
                        items.len()
                    )
                })?
            }
            other => {
                return Err(format!(
                    "{} is {}, cannot follow \"{seg}\"",
                    here(),
                    crate::call::json_type(other)
                ));
            }
        };
    }
    Ok(current)
}

/// The arguments of one call with their references bound, ready to render.
///
/// One pointer wide, and allocated only when there is something to rewrite: a plan holds
/// one per call, and most calls have no references.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ArgumentTemplate {
    #[allow(
        clippy::box_collection,
        reason = "a thin pointer: one word per call instead of a Vec's three"
    )]
    strings: Option<Box<Vec<StringTemplate<BoundReference>>>>,
}

impl From<Vec<StringTemplate<BoundReference>>> for ArgumentTemplate {
    fn from(strings: Vec<StringTemplate<BoundReference>>) -> Self {
        ArgumentTemplate::new(strings)
    }
}

/// A reference that could not be resolved at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnresolvedReference {
    /// The reference as written.
    pub text: String,
    /// Why it did not resolve.
    pub reason: String,
}

impl fmt::Display for UnresolvedReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "reference {} did not resolve: {}",
            self.text, self.reason
        )
    }
}

impl ArgumentTemplate {
    /// The template rewriting `strings` (none: an empty template, which allocates nothing).
    pub fn new(strings: Vec<StringTemplate<BoundReference>>) -> Self {
        ArgumentTemplate {
            strings: (!strings.is_empty()).then(|| Box::new(strings)),
        }
    }

    /// The strings to rewrite.
    pub fn strings(&self) -> &[StringTemplate<BoundReference>] {
        self.strings.as_deref().map_or(&[], Vec::as_slice)
    }

    /// True when nothing needs rewriting.
    pub fn is_empty(&self) -> bool {
        self.strings.is_none()
    }

    /// Every bound reference.
    pub fn references(&self) -> impl Iterator<Item = &BoundReference> {
        self.strings().iter().flat_map(StringTemplate::references)
    }

    /// Builds the final arguments from `args`, taking outputs from `output_of`, refusing
    /// to build arguments larger than `limit` bytes of compact JSON.
    ///
    /// The size is counted from the referenced values before anything is copied, so a chain
    /// of calls that each double what they reference is stopped before it allocates.
    pub fn render<'o>(
        &self,
        args: &Value,
        output_of: impl Fn(usize) -> Option<&'o Value>,
        limit: usize,
    ) -> Result<Value, RenderError> {
        let lookup = |r: &BoundReference| -> Result<&'o Value, UnresolvedReference> {
            let output = output_of(r.call).ok_or_else(|| UnresolvedReference {
                text: r.text.clone(),
                reason: "the referenced call has no output".into(),
            })?;
            resolve_path(output, &r.path).map_err(|reason| UnresolvedReference {
                text: r.text.clone(),
                reason,
            })
        };
        // The written arguments plus everything the references splice in: an upper bound
        // of the result (each reference string it replaces is counted too).
        let mut size = json_size(args, limit);
        for template in self.strings() {
            for part in &template.parts {
                if let Part::Ref(r) = part {
                    let budget = limit.saturating_sub(size);
                    size = size.saturating_add(json_size(lookup(r)?, budget));
                    if size > limit {
                        return Err(RenderError::TooLarge { limit });
                    }
                }
            }
        }
        let mut out = args.clone();
        for template in self.strings() {
            let value = render_string(template, &lookup)?;
            if let Some(slot) = slot_mut(&mut out, &template.location) {
                *slot = value;
            }
        }
        Ok(out)
    }
}

/// Why arguments could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderError {
    /// A reference did not resolve.
    Unresolved(UnresolvedReference),
    /// The resolved arguments would pass the size limit.
    TooLarge {
        /// The limit, in bytes of compact JSON.
        limit: usize,
    },
}

impl From<UnresolvedReference> for RenderError {
    fn from(e: UnresolvedReference) -> Self {
        RenderError::Unresolved(e)
    }
}

impl fmt::Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RenderError::Unresolved(e) => e.fmt(f),
            RenderError::TooLarge { limit } => write!(
                f,
                "arguments with references resolved would pass {limit} bytes (max_argument_bytes)"
            ),
        }
    }
}

/// The size of `value` written as compact JSON, in bytes, counted without writing it.
/// Counting stops once it passes `stop_above`: the result is then some size above it, so
/// the cost is bounded by the limit being checked, not by the value.
pub fn json_size(value: &Value, stop_above: usize) -> usize {
    match value {
        Value::Array(_) | Value::Object(_) => {}
        Value::String(s) => return string_size(s),
        Value::Number(n) => return number_size(n),
        Value::Bool(b) => return if *b { 4 } else { 5 },
        Value::Null => return 4,
    }
    let mut size = 0usize;
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        size = size.saturating_add(match v {
            Value::Null => 4,
            Value::Bool(true) => 4,
            Value::Bool(false) => 5,
            Value::Number(n) => number_size(n),
            Value::String(s) => string_size(s),
            Value::Array(items) => {
                stack.extend(items.iter());
                2 + items.len().saturating_sub(1)
            }
            Value::Object(map) => {
                stack.extend(map.values());
                // Braces, a colon per entry and the commas between them.
                let keys: usize = map.keys().map(|k| string_size(k)).sum();
                2 + keys + map.len() + map.len().saturating_sub(1)
            }
        });
        if size > stop_above {
            break;
        }
    }
    size
}

fn string_size(s: &str) -> usize {
    let escapes: usize = s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 1,
            0..=0x1f => 5,
            _ => 0,
        })
        .sum();
    s.len() + escapes + 2
}

fn number_size(n: &serde_json::Number) -> usize {
    if let Some(u) = n.as_u64() {
        digits(u)
    } else if let Some(i) = n.as_i64() {
        1 + digits(i.unsigned_abs())
    } else {
        n.to_string().len()
    }
}

fn digits(mut n: u64) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

fn render_string<'o>(
    template: &StringTemplate<BoundReference>,
    lookup: &impl Fn(&BoundReference) -> Result<&'o Value, UnresolvedReference>,
) -> Result<Value, UnresolvedReference> {
    if let Some(r) = template.whole() {
        return lookup(r).cloned();
    }
    let mut text = String::new();
    for part in &template.parts {
        match part {
            Part::Literal(s) => text.push_str(s),
            Part::Ref(r) => match lookup(r)? {
                Value::String(s) => text.push_str(s),
                other => text.push_str(&other.to_string()),
            },
        }
    }
    Ok(Value::String(text))
}

fn slot_mut<'v>(value: &'v mut Value, location: &[Step]) -> Option<&'v mut Value> {
    let mut current = value;
    for step in location {
        current = match (step, current) {
            (Step::Key(k), Value::Object(map)) => map.get_mut(k)?,
            (Step::Index(i), Value::Array(items)) => items.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bound(args: &Value, ids: &[&str]) -> ArgumentTemplate {
        let raw = find_references(args).expect("well formed");
        let strings = raw
            .into_iter()
            .map(|t| StringTemplate {
                location: t.location,
                parts: t
                    .parts
                    .into_iter()
                    .map(|p| match p {
                        Part::Literal(s) => Part::Literal(s),
                        Part::Ref(r) => Part::Ref(
                            bind(&r, |id| ids.iter().position(|x| *x == id)).expect("bound"),
                        ),
                    })
                    .collect(),
            })
            .collect();
        ArgumentTemplate::new(strings)
    }

    #[test]
    fn whole_reference_keeps_type_and_paths_index_arrays() {
        let outputs = [json!({"items": [{"url": "http://a"}, {"url": "http://b"}], "n": 2})];
        let args = json!({"all": "${c1}", "url": "${c1.items.1.url}", "n": "${c1.n}", "list": ["${c1.items.0}"]});
        let t = bound(&args, &["c1"]);
        let out = t
            .render(&args, |i| outputs.get(i), usize::MAX)
            .expect("renders");
        assert_eq!(out["all"], outputs[0]);
        assert_eq!(out["url"], json!("http://b"));
        assert_eq!(out["n"], json!(2));
        assert_eq!(out["list"][0], json!({"url": "http://a"}));
    }

    #[test]
    fn spliced_references_become_text_and_escapes_stay_literal() {
        let outputs = [json!("world"), json!({"k": [1, 2]})];
        let args = json!({"s": "hello ${a}! ${b.k} costs $${price}"});
        let t = bound(&args, &["a", "b"]);
        let out = t
            .render(&args, |i| outputs.get(i), usize::MAX)
            .expect("renders");
        assert_eq!(out["s"], json!("hello world! [1,2] costs ${price}"));
    }

    #[test]
    fn call_ids_with_dots_bind_to_the_longest_known_prefix() {
        let r = bind(&RawReference("tool.v2.out.x".into()), |id| {
            (id == "tool.v2").then_some(7)
        })
        .expect("bound");
        assert_eq!(r.call, 7);
        assert_eq!(r.path, ["out", "x"]);
        assert!(bind(&RawReference("nobody.x".into()), |_| None).is_none());
    }

    #[test]
    fn unresolvable_paths_say_why() {
        let outputs = [json!({"items": [1]})];
        for (args, reason) in [
            (json!({"x": "${a.items.3}"}), "index 3 is out of range"),
            (json!({"x": "${a.nope}"}), "has no key \"nope\""),
            (json!({"x": "${a.items.first}"}), "is not an index"),
            (json!({"x": "${a.items.0.deeper}"}), "is a number"),
        ] {
            let t = bound(&args, &["a"]);
            let err = t
                .render(&args, |i| outputs.get(i), usize::MAX)
                .expect_err("fails");
            assert!(err.to_string().contains(reason), "{err}");
        }
    }

    #[test]
    fn json_size_counts_what_serde_json_writes() {
        for v in [
            json!(null),
            json!(true),
            json!(false),
            json!(0),
            json!(-1234567),
            json!(u64::MAX),
            json!(1.5e-7),
            json!("plain"),
            json!("quote\" slash\\ tab\t nul\u{0} bell\u{7} é"),
            json!([]),
            json!({}),
            json!([1, [2, {"a": "b", "c\n": [null, false]}], "x"]),
        ] {
            assert_eq!(json_size(&v, usize::MAX), v.to_string().len(), "{v}");
        }
        let big = json!(vec!["0123456789"; 1000]);
        let partial = json_size(&big, 100);
        assert!(
            partial > 100 && partial < big.to_string().len() / 4,
            "stops soon after the limit: {partial}"
        );
    }

    #[test]
    fn arguments_that_would_pass_the_limit_are_refused_before_they_are_built() {
        let outputs = [json!("x".repeat(1000))];
        let args = json!({"l": "${a}", "r": "${a}", "s": "a ${a} b"});
        let t = bound(&args, &["a"]);
        let built = t.render(&args, |i| outputs.get(i), 4000).expect("fits");
        assert!(built.to_string().len() <= 4000);
        assert_eq!(
            t.render(&args, |i| outputs.get(i), 2500),
            Err(RenderError::TooLarge { limit: 2500 })
        );
        let message = RenderError::TooLarge { limit: 2500 }.to_string();
        assert!(message.contains("2500 bytes") && message.contains("max_argument_bytes"));
    }

    #[test]
    fn a_template_without_strings_is_one_word_and_empty() {
        assert_eq!(
            std::mem::size_of::<ArgumentTemplate>(),
            std::mem::size_of::<usize>()
        );
        assert!(ArgumentTemplate::new(Vec::new()).is_empty());
        let t = bound(&json!({"x": "${a}", "y": 1}), &["a"]);
        assert!(!t.is_empty());
        assert_eq!(t.strings().len(), 1);
        assert_eq!(t.references().map(|r| r.call).collect::<Vec<_>>(), [0]);
    }

    #[test]
    fn malformed_references_are_errors() {
        assert!(find_references(&json!({"x": "${a"})).is_err());
        assert!(find_references(&json!({"x": "${}"})).is_err());
        assert_eq!(
            find_references(&json!({"x": "plain $ { text"})).map(|v| v.len()),
            Ok(0)
        );
    }
}
