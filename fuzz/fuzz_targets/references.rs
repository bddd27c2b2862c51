//! `${call_id...}` references: `parse_string` and `find_references` on generated strings,
//! binding through `Plan::build` (ids with dots, the longest prefix that names a call), and
//! `ArgumentTemplate::render` / `resolve_path` against generated outputs.
//!
//! Strings are built from the syntax's own tokens (`${`, `$${`, `}`, `.`, ids, keys,
//! indexes) so the fuzzer spends its time on references, not on JSON syntax. Checked: nothing
//! panics; parts alternate literal/reference with no empty part; a string written from parts
//! parses back into them; every bound reference names another call of the batch; a rendered
//! whole reference is exactly the value its path resolves to, a spliced one is a string; a
//! render fails only naming one of the call's own references.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};
use toolgraph_core::reference::{self, ArgumentTemplate, Part, RawReference, RenderError, Step};
use toolgraph_core::{
    Access, FnTool, ParallelExecutorConfig, ResourceAccess, ToolCall, ToolSet, ToolSpec,
};
use toolgraph_engine::Plan;

const IDS: [&str; 8] = ["a", "b", "a.b", "c1", "tool.v2", "x.0", "7", "a.b.c"];
const KEYS: [&str; 8] = ["a", "b", "items", "url", "0", "1", "b.c", ""];
const DEPTH: usize = 6;

#[derive(Arbitrary, Debug)]
enum Tok {
    Open,
    Escape,
    Dollar,
    Close,
    Dot,
    Space,
    Index(u8),
    Id(u8),
    Key(u8),
    Text(String),
}

#[derive(Arbitrary, Debug)]
enum J {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Vec<Tok>),
    Arr(Vec<J>),
    Obj(Vec<(u8, J)>),
}

/// A string from its parts: literal text (no `${` inside) and reference names.
#[derive(Arbitrary, Debug)]
enum Piece {
    Literal(String),
    Ref(Vec<Tok>),
}

#[derive(Arbitrary, Debug)]
struct Case {
    calls: Vec<(u8, Vec<(u8, J)>)>,
    outputs: Vec<J>,
    raw: String,
    pieces: Vec<Piece>,
}

fn text(toks: &[Tok]) -> String {
    let mut s = String::new();
    for t in toks {
        match t {
            Tok::Open => s.push_str("${"),
            Tok::Escape => s.push_str("$${"),
            Tok::Dollar => s.push('$'),
            Tok::Close => s.push('}'),
            Tok::Dot => s.push('.'),
            Tok::Space => s.push(' '),
            Tok::Index(i) => s.push_str(&(i % 4).to_string()),
            Tok::Id(i) => s.push_str(IDS[usize::from(*i) % IDS.len()]),
            Tok::Key(i) => s.push_str(KEYS[usize::from(*i) % KEYS.len()]),
            Tok::Text(t) => s.push_str(t),
        }
    }
    s
}

fn value(j: &J, depth: usize) -> Value {
    match j {
        J::Null => Value::Null,
        J::Bool(b) => json!(b),
        J::Int(i) => json!(i),
        J::Float(f) => json!(f),
        J::Str(toks) => Value::String(text(toks)),
        J::Arr(items) if depth < DEPTH => {
            Value::Array(items.iter().map(|j| value(j, depth + 1)).collect())
        }
        J::Obj(entries) if depth < DEPTH => object(entries, depth + 1),
        J::Arr(_) | J::Obj(_) => Value::Null,
    }
}

fn object(entries: &[(u8, J)], depth: usize) -> Value {
    let mut map = Map::new();
    for (k, j) in entries {
        map.insert(
            KEYS[usize::from(*k) % KEYS.len()].to_owned(),
            value(j, depth),
        );
    }
    Value::Object(map)
}

/// Parts of one parsed string: never empty, never two literals in a row, references
/// trimmed, non-empty and free of `}`.
fn check_parts(s: &str, parts: &[Part<RawReference>]) {
    let mut last_literal = false;
    for p in parts {
        match p {
            Part::Literal(l) => {
                assert!(!l.is_empty(), "empty literal in {s:?}");
                assert!(!last_literal, "two literals in a row in {s:?}");
                last_literal = true;
            }
            Part::Ref(RawReference(r)) => {
                assert!(!r.is_empty(), "empty reference in {s:?}");
                assert_eq!(r.trim(), r, "reference not trimmed in {s:?}");
                assert!(!r.contains('}'), "reference holds a brace in {s:?}");
                last_literal = false;
            }
        }
    }
}

fn slot<'v>(value: &'v Value, location: &[Step]) -> Option<&'v Value> {
    let mut current = value;
    for step in location {
        current = match (step, current) {
            (Step::Key(k), Value::Object(m)) => m.get(k)?,
            (Step::Index(i), Value::Array(a)) => a.get(*i)?,
            _ => return None,
        };
    }
    Some(current)
}

fn tools() -> ToolSet {
    let mut set = ToolSet::new();
    let tool = FnTool::new(ToolSpec::new("t"), |args: Value, _| async move { Ok(args) })
        .with_resources(
            |args: &Value| match args.get("path").and_then(Value::as_str) {
                Some(p) => vec![ResourceAccess {
                    key: format!("file:{p}"),
                    access: Access::Write,
                }],
                None => Vec::new(),
            },
        );
    if set.register(tool).is_err() {
        unreachable!("one tool registers");
    }
    set
}

fuzz_target!(|case: Case| {
    // Raw strings: no panic, well-formed parts.
    if let Ok(parts) = reference::parse_string(&case.raw) {
        check_parts(&case.raw, &parts);
    }

    // Parts → text → parts. A literal `${` is written `$${`; a literal ending in `$` right
    // before a reference cannot be written (it would read as an escape), nor can one that
    // holds `$${` itself, so such pieces are left out.
    let mut written = String::new();
    let mut expected: Vec<Part<RawReference>> = Vec::new();
    for piece in &case.pieces {
        match piece {
            Piece::Literal(l) if !l.contains("$${") && !l.ends_with('$') && !l.is_empty() => {
                written.push_str(&l.replace("${", "$${"));
                match expected.last_mut() {
                    Some(Part::Literal(prev)) => prev.push_str(l),
                    _ => expected.push(Part::Literal(l.clone())),
                }
            }
            Piece::Ref(toks) => {
                let name = text(toks);
                if name.contains('}') || name.trim().is_empty() {
                    continue;
                }
                if written.ends_with('$') {
                    continue;
                }
                written.push_str("${");
                written.push_str(&name);
                written.push('}');
                expected.push(Part::Ref(RawReference(name.trim().to_owned())));
            }
            Piece::Literal(_) => {}
        }
    }
    match reference::parse_string(&written) {
        Ok(parts) => assert_eq!(parts, expected, "{written:?}"),
        Err(e) => panic!("{written:?} written from parts does not parse: {e}"),
    }

    // A batch: bind through the planner, render against outputs.
    let calls: Vec<ToolCall> = case
        .calls
        .iter()
        .take(8)
        .map(|(id, args)| ToolCall::new(IDS[usize::from(*id) % IDS.len()], "t", object(args, 0)))
        .collect();
    for call in &calls {
        if let Ok(found) = reference::find_references(&call.arguments) {
            for t in &found {
                assert!(slot(&call.arguments, &t.location).is_some_and(Value::is_string));
                if let Some(Value::String(s)) = slot(&call.arguments, &t.location) {
                    check_parts(s, &t.parts);
                }
            }
        }
    }
    let outputs: Vec<Value> = case.outputs.iter().map(|j| value(j, 0)).collect();
    let n = calls.len();
    let config = ParallelExecutorConfig::default();
    let Ok(plan) = Plan::build(calls, &tools(), &config) else {
        return;
    };
    for (i, planned) in plan.calls().iter().enumerate() {
        check_render(i, n, &planned.template, &planned.call.arguments, &outputs);
    }
});

fn check_render(i: usize, n: usize, template: &ArgumentTemplate, args: &Value, outputs: &[Value]) {
    for r in template.references() {
        assert!(
            r.call < n && r.call != i,
            "reference {} bound to {}",
            r.text,
            r.call
        );
    }
    match template.render(args, |p| outputs.get(p), usize::MAX) {
        Ok(rendered) => {
            for t in template.strings() {
                let got = slot(&rendered, &t.location).expect("a rendered slot stays");
                match t.whole() {
                    Some(r) => {
                        let output = outputs.get(r.call).expect("rendered from an output");
                        let want = reference::resolve_path(output, &r.path)
                            .expect("a rendered path resolves");
                        assert_eq!(got, want, "{} renders as its value", r.text);
                    }
                    None => assert!(got.is_string(), "a spliced string stays a string"),
                }
            }
            if template.is_empty() {
                assert_eq!(&rendered, args, "nothing to rewrite");
            }
        }
        Err(RenderError::Unresolved(e)) => {
            assert!(
                template.references().any(|r| r.text == e.text),
                "{} is not a reference of this call",
                e.text
            );
        }
        Err(e @ RenderError::TooLarge { .. }) => panic!("no size limit was set: {e}"),
    }
}
