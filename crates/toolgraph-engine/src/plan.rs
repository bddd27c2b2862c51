//! Planning: from a batch of calls to a dependency graph, in linear time, without running
//! anything.
//!
//! Edges come from `depends_on`, from `${call_id}` references, and from resource hazards
//! (two calls touching one resource, at least one writing, are ordered as emitted; readers
//! stay parallel). Exclusive tools write the universal resource that every call reads, so
//! they run alone, in emitted order. Every edge keeps its reason. Every problem is reported
//! at once, each naming its call; a cycle is reported with the ids on it.
//!
//! Between two large groups of compatible accesses to one resource (many readers of a folder,
//! then many writers into it) the planner puts a *join*: a node that is not a call, which
//! waits for every member of the earlier group and which every member of the later group
//! waits for. Ordering is the same as with an edge per pair, but the graph stays linear
//! (k + k edges, not k × k). Joins are nodes `len()..node_count()`: they carry no data, take
//! no time, have no level of their own, and never follow or precede another join.
//!
//! Invariant: pure — no I/O, no clock, no runtime. O(calls + edges + argument size).

use std::collections::HashMap;
use std::fmt;

use serde::Serialize;
use toolgraph_core::reference::{self, ArgumentTemplate, Part, StringTemplate, pointer};
use toolgraph_core::{Access, InputError, ParallelExecutorConfig, Problem, ToolCall, ToolSet};

/// A read-after-write, write-after-read or write-after-write conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Hazard {
    /// The later call reads what the earlier one writes.
    ReadAfterWrite,
    /// The later call writes what the earlier one reads.
    WriteAfterRead,
    /// Both write.
    WriteAfterWrite,
}

/// Why one call waits for another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EdgeReason {
    /// Named in `depends_on`.
    DependsOn,
    /// An argument references the earlier call's output.
    Reference {
        /// The reference as written.
        text: String,
    },
    /// Both touch one resource and one writes.
    Hazard {
        /// The resource key.
        resource: String,
        /// The conflict.
        hazard: Hazard,
    },
    /// One of the two is an exclusive tool.
    Exclusive {
        /// Why the call counts as exclusive.
        why: String,
    },
}

impl EdgeReason {
    /// Data edges carry success: a dependant of a failed call is skipped. Ordering edges
    /// (hazards, exclusivity) only wait for the earlier call to end.
    pub fn is_data(&self) -> bool {
        matches!(self, EdgeReason::DependsOn | EdgeReason::Reference { .. })
    }
}

impl fmt::Display for EdgeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EdgeReason::DependsOn => f.write_str("depends_on"),
            EdgeReason::Reference { text } => write!(f, "reference {text}"),
            EdgeReason::Hazard { resource, hazard } => {
                let h = match hazard {
                    Hazard::ReadAfterWrite => "read-after-write",
                    Hazard::WriteAfterRead => "write-after-read",
                    Hazard::WriteAfterWrite => "write-after-write",
                };
                write!(f, "{h} on {resource}")
            }
            EdgeReason::Exclusive { why } => write!(f, "exclusive: {why}"),
        }
    }
}

/// One dependency: `to` starts only after `from` ended.
///
/// Positions below [`Plan::len`] are calls; from `len()` on they are joins (see the module
/// documentation): an edge into a join comes from a call, an edge out of one goes to a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Edge {
    /// Position of the earlier call (or join).
    pub from: usize,
    /// Position of the later call (or join).
    pub to: usize,
    /// Why.
    pub reason: EdgeReason,
}

/// One call, checked and ready to schedule.
///
/// A plan holds one per call, so beside the call itself it keeps only what is needed, each
/// part one pointer wide and allocated only when not empty.
#[derive(Debug, Clone)]
pub struct PlannedCall {
    /// The call as given.
    pub call: ToolCall,
    /// Position of its tool in the [`ToolSet`].
    pub tool: usize,
    /// Its references, bound to positions.
    pub template: ArgumentTemplate,
    /// Resource keys it touches (for per-resource limits).
    pub resources: ResourceKeys,
}

/// The resource keys one call touches, in key order; reads as a `[String]`.
///
/// One pointer wide, and allocated only when the call touches a resource (most touch none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceKeys(Option<Box<Box<[String]>>>);

impl From<Vec<String>> for ResourceKeys {
    fn from(keys: Vec<String>) -> Self {
        ResourceKeys((!keys.is_empty()).then(|| Box::new(keys.into_boxed_slice())))
    }
}

impl std::ops::Deref for ResourceKeys {
    type Target = [String];

    fn deref(&self) -> &[String] {
        self.0.as_deref().map_or(&[], |keys| &**keys)
    }
}

impl<'a> IntoIterator for &'a ResourceKeys {
    type Item = &'a String;
    type IntoIter = std::slice::Iter<'a, String>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// A checked batch and its dependency graph.
#[derive(Debug, Clone)]
pub struct Plan {
    calls: Vec<PlannedCall>,
    /// Number of calls (kept when the report takes the calls out).
    call_count: usize,
    /// The resource each join orders accesses to, by join number (node `call_count + k`).
    joins: Vec<String>,
    edges: Vec<Edge>,
    /// CSR over nodes (calls, then joins): dependants of node `i` are
    /// `out[out_start[i]..out_start[i + 1]]`.
    out_start: Vec<u32>,
    out: Vec<(u32, bool)>,
    in_degree: Vec<u32>,
    /// Per node; a join's is the level of the calls after it.
    levels: Vec<u32>,
    /// A topological order of the nodes.
    order: Vec<u32>,
    level_count: u32,
}

/// A group of at least this many compatible accesses is followed through a join, not an edge
/// per pair: below it, the edges a join saves do not pay for the node.
pub const JOIN_MIN_GROUP: usize = 4;

#[derive(Default)]
struct UniversalState {
    last_writer: Option<u32>,
    readers: Vec<u32>,
}

/// Accesses to one resource: the current group of compatible accesses (readers, or intent
/// writers) and what that group must follow (the previous group, or the last writer).
#[derive(Default)]
struct ResourceState {
    before: Vec<u32>,
    before_mode: Option<Access>,
    group: Vec<u32>,
    group_mode: Option<Access>,
}

impl ResourceState {
    /// Records that call `pos` accesses the resource; returns the nodes it must follow and
    /// the hazard each edge stands for. When a new group starts after a group of at least
    /// [`JOIN_MIN_GROUP`] calls, `join` is asked for a node that follows that whole group (and
    /// given the group and the hazard); the new group follows the join alone.
    fn touch(
        &mut self,
        pos: u32,
        access: Access,
        join: &mut dyn FnMut(Vec<u32>, Hazard) -> u32,
    ) -> (Vec<u32>, Hazard) {
        if access == Access::Write {
            let (preds, mode) = if self.group.is_empty() {
                (std::mem::take(&mut self.before), self.before_mode)
            } else {
                (std::mem::take(&mut self.group), self.group_mode)
            };
            self.before = vec![pos];
            self.before_mode = Some(Access::Write);
            self.group_mode = None;
            return (preds, hazard_between(mode, access));
        }
        if self.group_mode != Some(access) && !self.group.is_empty() {
            let group = std::mem::take(&mut self.group);
            self.before = if group.len() >= JOIN_MIN_GROUP {
                vec![join(group, hazard_between(self.group_mode, access))]
            } else {
                group
            };
            self.before_mode = self.group_mode;
        }
        self.group_mode = Some(access);
        self.group.push(pos);
        (
            self.before.clone(),
            hazard_between(self.before_mode, access),
        )
    }
}

fn hazard_between(earlier: Option<Access>, later: Access) -> Hazard {
    match (earlier, later) {
        (_, Access::Read) => Hazard::ReadAfterWrite,
        (Some(Access::Read), _) => Hazard::WriteAfterRead,
        _ => Hazard::WriteAfterWrite,
    }
}

impl Plan {
    /// Checks `calls` against `tools` and builds the graph.
    pub fn build(
        calls: Vec<ToolCall>,
        tools: &ToolSet,
        config: &ParallelExecutorConfig,
    ) -> Result<Plan, InputError> {
        let n = calls.len();
        let mut problems = Vec::new();
        if n >= u32::MAX as usize {
            return Err(InputError::single(Problem::input(
                "too many calls in one batch",
            )));
        }
        // Wrapped before any per-call table exists, so the batch is never held twice beside
        // them; what planning finds is written in once the index of ids is gone.
        let mut planned: Vec<PlannedCall> = calls
            .into_iter()
            .map(|call| PlannedCall {
                call,
                tool: usize::MAX,
                template: ArgumentTemplate::default(),
                resources: ResourceKeys::default(),
            })
            .collect();
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(n);
        for (pos, call) in planned.iter().map(|p| &p.call).enumerate() {
            if call.id.is_empty() {
                problems.push(Problem::position(pos, "missing \"id\""));
            } else if index.insert(call.id.as_str(), pos).is_some() {
                problems.push(Problem::call(pos, &call.id, "duplicate call id"));
            }
        }

        let mut found: Vec<(usize, ArgumentTemplate, ResourceKeys)> = Vec::with_capacity(n);
        let mut edges: Vec<Edge> = Vec::new();
        // Per node (calls, then joins as they are made): the last call that took an edge from
        // it, so each pair gets one edge.
        let mut incoming_stamp = vec![u32::MAX; n];
        let mut joins: Vec<String> = Vec::new();
        let mut universal = UniversalState::default();
        let mut resources: HashMap<String, ResourceState> = HashMap::new();

        for (pos, call) in planned.iter().map(|p| &p.call).enumerate() {
            let id = call.id.as_str();
            let problem = |m: String| Problem::call(pos, id, m);
            let add_edge =
                |edges: &mut Vec<Edge>, stamp: &mut Vec<u32>, from: usize, reason: EdgeReason| {
                    if stamp[from] != pos as u32 {
                        stamp[from] = pos as u32;
                        edges.push(Edge {
                            from,
                            to: pos,
                            reason,
                        });
                    }
                };

            let tool = tools.index_of(&call.name);
            if tool.is_none() {
                let known = tools.names().join(", ");
                problems.push(problem(format!(
                    "unknown tool \"{}\" (known: {known})",
                    call.name
                )));
            }
            if !call.arguments.is_object() {
                problems.push(problem(format!(
                    "arguments must be a JSON object, got {}",
                    toolgraph_core::call::json_type(&call.arguments)
                )));
            }

            for dep in &call.depends_on {
                match index.get(dep.as_str()) {
                    Some(&from) if from == pos => {
                        problems.push(problem("depends on itself".into()))
                    }
                    Some(&from) => {
                        add_edge(&mut edges, &mut incoming_stamp, from, EdgeReason::DependsOn)
                    }
                    None => {
                        problems.push(problem(format!("depends_on names unknown call \"{dep}\"")))
                    }
                }
            }

            let template = match reference::find_references(&call.arguments) {
                Ok(raw) => {
                    let mut strings = Vec::with_capacity(raw.len());
                    for t in raw {
                        let mut parts = Vec::with_capacity(t.parts.len());
                        for part in t.parts {
                            match part {
                                Part::Literal(s) => parts.push(Part::Literal(s)),
                                Part::Ref(r) => {
                                    match reference::bind(&r, |id| index.get(id).copied()) {
                                        Some(b) if b.call == pos => problems.push(problem(
                                            format!("{} references the call itself", b.text),
                                        )),
                                        Some(b) => {
                                            add_edge(
                                                &mut edges,
                                                &mut incoming_stamp,
                                                b.call,
                                                EdgeReason::Reference {
                                                    text: b.text.clone(),
                                                },
                                            );
                                            parts.push(Part::Ref(b));
                                        }
                                        None => problems.push(problem(format!(
                                            "reference ${{{}}} at {} names no call in this batch",
                                            r.0,
                                            pointer(&t.location)
                                        ))),
                                    }
                                }
                            }
                        }
                        strings.push(StringTemplate {
                            location: t.location,
                            parts,
                        });
                    }
                    ArgumentTemplate::new(strings)
                }
                Err(errors) => {
                    problems.extend(errors.into_iter().map(&problem));
                    ArgumentTemplate::default()
                }
            };

            let mut touched = ResourceKeys::default();
            if let Some(t) = tool {
                let entry = tools.entry(t);
                for (path, message) in entry.schema_violations(&call.arguments) {
                    let from_reference = template
                        .strings()
                        .iter()
                        .any(|s| is_within(&path, &pointer(&s.location)));
                    if !from_reference {
                        let at = if path.is_empty() {
                            String::new()
                        } else {
                            format!(" at {path}")
                        };
                        problems.push(problem(format!(
                            "arguments break the schema of \"{}\"{at}: {message}",
                            call.name
                        )));
                    }
                }

                if config.validate_thread_safety {
                    let spec = entry.tool.spec();
                    let mut accesses = entry.tool.resources(&call.arguments);
                    let unknown = accesses
                        .iter()
                        .find(|a| a.key.contains("${"))
                        .map(|a| a.key.clone());
                    let exclusive_why = if !spec.traits.parallel_safe {
                        Some(format!("tool {} runs alone", spec.name))
                    } else {
                        unknown.map(|k| {
                            format!("resource {k} is unknown until its references resolve")
                        })
                    };
                    if let Some(why) = exclusive_why {
                        accesses.clear();
                        // Writes the universal resource: after every earlier call, before every later one.
                        if universal.readers.is_empty()
                            && let Some(w) = universal.last_writer
                        {
                            add_edge(
                                &mut edges,
                                &mut incoming_stamp,
                                w as usize,
                                EdgeReason::Exclusive { why: why.clone() },
                            );
                        }
                        for r in universal.readers.drain(..) {
                            add_edge(
                                &mut edges,
                                &mut incoming_stamp,
                                r as usize,
                                EdgeReason::Exclusive { why: why.clone() },
                            );
                        }
                        universal.last_writer = Some(pos as u32);
                    } else {
                        if let Some(w) = universal.last_writer {
                            let why = format!("tool {} runs alone", planned[w as usize].call.name);
                            add_edge(
                                &mut edges,
                                &mut incoming_stamp,
                                w as usize,
                                EdgeReason::Exclusive { why },
                            );
                        }
                        universal.readers.push(pos as u32);
                    }
                    // One access per key; two different accesses of one key make a write.
                    accesses.sort_by(|a, b| a.key.cmp(&b.key));
                    accesses.dedup_by(|later, kept| {
                        if later.key != kept.key {
                            return false;
                        }
                        if later.access != kept.access {
                            kept.access = Access::Write;
                        }
                        true
                    });
                    for access in &accesses {
                        let state = resources.entry(access.key.clone()).or_default();
                        let mut join = |group: Vec<u32>, kind: Hazard| {
                            let node = n + joins.len();
                            joins.push(access.key.clone());
                            incoming_stamp.push(u32::MAX);
                            edges.extend(group.into_iter().map(|from| Edge {
                                from: from as usize,
                                to: node,
                                reason: hazard(&access.key, kind),
                            }));
                            node as u32
                        };
                        let (preds, kind) = state.touch(pos as u32, access.access, &mut join);
                        for p in preds {
                            add_edge(
                                &mut edges,
                                &mut incoming_stamp,
                                p as usize,
                                hazard(&access.key, kind),
                            );
                        }
                    }
                    touched = accesses
                        .into_iter()
                        .map(|a| a.key)
                        .collect::<Vec<_>>()
                        .into();
                } else {
                    // No hazard edges, but per-resource limits (per host, per MCP server)
                    // still count what each call touches.
                    let mut keys: Vec<String> = entry
                        .tool
                        .resources(&call.arguments)
                        .into_iter()
                        .map(|a| a.key)
                        .collect();
                    keys.sort();
                    keys.dedup();
                    touched = keys.into();
                }
            }
            found.push((tool.unwrap_or(usize::MAX), template, touched));
        }
        drop(resources);
        drop(universal);
        drop(index);
        drop(incoming_stamp);
        for (p, (tool, template, resources)) in planned.iter_mut().zip(found) {
            p.tool = tool;
            p.template = template;
            p.resources = resources;
        }
        // Cycles are looked for even when other problems were found, so one round of fixes
        // suffices.
        match Plan::from_edges(planned, joins, edges) {
            Ok(plan) if problems.is_empty() => Ok(plan),
            Ok(_) => Err(InputError { problems }),
            Err(cycles) => {
                problems.extend(cycles);
                Err(InputError { problems })
            }
        }
    }

    fn from_edges(
        calls: Vec<PlannedCall>,
        joins: Vec<String>,
        edges: Vec<Edge>,
    ) -> Result<Plan, Vec<Problem>> {
        let call_count = calls.len();
        let nodes = call_count + joins.len();
        let mut out_start = vec![0u32; nodes + 1];
        let mut in_degree = vec![0u32; nodes];
        for e in &edges {
            out_start[e.from + 1] += 1;
            in_degree[e.to] += 1;
        }
        for i in 0..nodes {
            out_start[i + 1] += out_start[i];
        }
        let mut fill = out_start.clone();
        let mut out = vec![(0u32, false); edges.len()];
        for e in &edges {
            let slot = &mut fill[e.from];
            out[*slot as usize] = (e.to as u32, e.reason.is_data());
            *slot += 1;
        }

        // Kahn's algorithm: topological order and levels (longest path from a source, joins
        // adding nothing: a call after a join is one level after the group before it).
        let mut remaining = in_degree.clone();
        let mut levels = vec![0u32; nodes];
        let mut order: Vec<u32> = (0..nodes as u32)
            .filter(|&i| remaining[i as usize] == 0)
            .collect();
        let mut head = 0;
        while head < order.len() {
            let i = order[head] as usize;
            head += 1;
            let step = u32::from(i < call_count);
            for &(to, _) in &out[out_start[i] as usize..out_start[i + 1] as usize] {
                let to = to as usize;
                levels[to] = levels[to].max(levels[i] + step);
                remaining[to] -= 1;
                if remaining[to] == 0 {
                    order.push(to as u32);
                }
            }
        }
        if order.len() < nodes {
            return Err(cycle_problems(&calls, &joins, &edges, &remaining));
        }
        let level_count = levels[..call_count].iter().max().map_or(0, |m| m + 1);
        Ok(Plan {
            calls,
            call_count,
            joins,
            edges,
            out_start,
            out,
            in_degree,
            levels,
            order,
            level_count,
        })
    }

    /// The calls, in input order.
    pub fn calls(&self) -> &[PlannedCall] {
        &self.calls
    }

    /// Takes the calls out, leaving the graph (for the report of an execution that owns its
    /// plan: ids and names move into the results instead of being copied).
    pub(crate) fn take_calls(&mut self) -> Vec<PlannedCall> {
        std::mem::take(&mut self.calls)
    }

    /// Every edge, with its reason (one per pair of nodes; data reasons first). Positions
    /// from [`len`](Self::len) on are joins.
    pub fn edges(&self) -> &[Edge] {
        &self.edges
    }

    /// Number of calls.
    pub fn len(&self) -> usize {
        self.call_count
    }

    /// True for an empty batch.
    pub fn is_empty(&self) -> bool {
        self.call_count == 0
    }

    /// Number of nodes: the calls, then the joins.
    pub fn node_count(&self) -> usize {
        self.in_degree.len()
    }

    /// The resource each join orders, by join number (join `k` is node `len() + k`).
    pub fn joins(&self) -> &[String] {
        &self.joins
    }

    /// True when node `i` is a join, not a call.
    pub fn is_join(&self, i: usize) -> bool {
        i >= self.call_count
    }

    /// Dependants of node `i` (calls or joins), with whether the edge carries data.
    pub fn dependants(&self, i: usize) -> &[(u32, bool)] {
        &self.out[self.out_start[i] as usize..self.out_start[i + 1] as usize]
    }

    /// Number of nodes `i` waits for.
    pub fn in_degree(&self, i: usize) -> u32 {
        self.in_degree[i]
    }

    /// Level of each call: 0 without dependencies, else one more than its deepest dependency.
    pub fn levels(&self) -> &[u32] {
        &self.levels[..self.call_count]
    }

    /// A topological order of the nodes (joins included).
    pub fn order(&self) -> &[u32] {
        &self.order
    }

    /// Positions grouped by level, e.g. `[[0,1,2],[3,4],[5]]` (the seed's `topological_sort`).
    pub fn level_groups(&self) -> Vec<Vec<usize>> {
        let mut groups = vec![Vec::new(); self.level_count as usize];
        for (i, &l) in self.levels().iter().enumerate() {
            groups[l as usize].push(i);
        }
        groups
    }

    /// Every pair of calls the plan orders, with the reason: the edges between calls, and for
    /// each join every (member of its group, call after it) pair. This is the graph as if it
    /// had no joins, so it may be quadratic in the calls: for checking a schedule, not for
    /// scheduling.
    pub fn ordered_pairs(&self) -> impl Iterator<Item = (usize, usize, &EdgeReason)> + '_ {
        let n = self.call_count;
        self.edges.iter().flat_map(move |e| {
            let direct = (e.from < n && e.to < n).then_some((e.from, e.to, &e.reason));
            let through: &[(u32, bool)] = if e.to >= n {
                self.dependants(e.to)
            } else {
                &[]
            };
            direct.into_iter().chain(
                through
                    .iter()
                    .map(move |&(d, _)| (e.from, d as usize, &e.reason)),
            )
        })
    }

    /// Calls with no edge in or out: they can run in any order beside anything.
    pub fn independent(&self) -> Vec<usize> {
        (0..self.len())
            .filter(|&i| self.in_degree[i] == 0 && self.dependants(i).is_empty())
            .collect()
    }

    /// Calls with at least one edge in or out.
    pub fn dependent(&self) -> Vec<usize> {
        (0..self.len())
            .filter(|&i| self.in_degree[i] != 0 || !self.dependants(i).is_empty())
            .collect()
    }

    /// For each node, the longest chain of `weight`s from it to the end of the graph,
    /// its own weight included (the scheduler's "remaining critical path"). `weight` is asked
    /// about calls only: a join weighs nothing.
    pub fn remaining_path(&self, weight: impl Fn(usize) -> f64) -> Vec<f64> {
        let mut rank = vec![0.0f64; self.node_count()];
        for &i in self.order.iter().rev() {
            let i = i as usize;
            let tail = self
                .dependants(i)
                .iter()
                .map(|&(d, _)| rank[d as usize])
                .fold(0.0, f64::max);
            let own = if self.is_join(i) { 0.0 } else { weight(i) };
            rank[i] = own + tail;
        }
        rank
    }

    /// The calls on the longest chain of `weight`s, in order (the critical path).
    pub fn critical_path_calls(&self, weight: impl Fn(usize) -> f64) -> Vec<usize> {
        let rank = self.remaining_path(&weight);
        let best = |candidates: &mut dyn Iterator<Item = usize>| {
            candidates.max_by(|&a, &b| rank[a].total_cmp(&rank[b]).then(b.cmp(&a)))
        };
        let mut path = Vec::new();
        let mut at = best(&mut (0..self.len()).filter(|&i| self.in_degree[i] == 0));
        while let Some(i) = at {
            if !self.is_join(i) {
                path.push(i);
            }
            at = best(&mut self.dependants(i).iter().map(|&(d, _)| d as usize));
        }
        path
    }

    /// The longest chain of `weight`s through the graph (e.g. measured durations).
    pub fn critical_path(&self, weight: impl Fn(usize) -> f64) -> f64 {
        self.remaining_path(weight).into_iter().fold(0.0, f64::max)
    }
}

fn hazard(resource: &str, hazard: Hazard) -> EdgeReason {
    EdgeReason::Hazard {
        resource: resource.to_owned(),
        hazard,
    }
}

/// True when JSON pointer `path` is `base` or below it.
fn is_within(path: &str, base: &str) -> bool {
    path == base || (path.starts_with(base) && path.as_bytes().get(base.len()) == Some(&b'/'))
}

/// Names the cycles among the calls Kahn's algorithm could not order. A join on a cycle is
/// looked through: the ring names calls only, each step with the reason of its last edge.
fn cycle_problems(
    calls: &[PlannedCall],
    joins: &[String],
    edges: &[Edge],
    remaining: &[u32],
) -> Vec<Problem> {
    let n = calls.len();
    let nodes = n + joins.len();
    // A predecessor of each stuck node that is itself stuck: following it must loop.
    let mut stuck_pred: Vec<Option<(usize, &EdgeReason)>> = vec![None; nodes];
    for e in edges {
        if remaining[e.to] > 0 && remaining[e.from] > 0 && stuck_pred[e.to].is_none() {
            stuck_pred[e.to] = Some((e.from, &e.reason));
        }
    }
    let mut walk_of = vec![usize::MAX; nodes];
    let mut problems = Vec::new();
    for start in 0..n {
        if remaining[start] == 0 || walk_of[start] != usize::MAX {
            continue;
        }
        let mut path = Vec::new();
        let mut at = start;
        while walk_of[at] == usize::MAX {
            walk_of[at] = start;
            path.push(at);
            match stuck_pred[at] {
                Some((p, _)) => at = p,
                None => break,
            }
        }
        if walk_of[at] != start {
            continue; // reached a cycle found by an earlier walk
        }
        let Some(from) = path.iter().position(|&p| p == at) else {
            continue;
        };
        // path runs against the edges; reverse it to read in execution order. Joins are
        // looked through (a join never follows a join, so a cycle holds calls).
        let mut cycle: Vec<usize> = path[from..].iter().copied().filter(|&c| c < n).collect();
        if cycle.is_empty() {
            continue;
        }
        cycle.reverse();
        // Start the cycle at its first call in input order, for stable messages.
        let first_at = (0..cycle.len()).min_by_key(|&k| cycle[k]).unwrap_or(0);
        cycle.rotate_left(first_at);
        let id = |c: usize| calls[c].call.id.as_str();
        let mut ring: Vec<&str> = cycle.iter().map(|&c| id(c)).collect();
        ring.push(id(cycle[0]));
        let why: Vec<String> = (0..cycle.len())
            .map(|k| {
                let (from, to) = (cycle[k], cycle[(k + 1) % cycle.len()]);
                let reason = match stuck_pred[to] {
                    Some((p, r)) if p >= n => format!("{r}, through the join of the earlier group"),
                    Some((_, r)) => r.to_string(),
                    None => String::new(),
                };
                format!("{} → {}: {reason}", id(from), id(to))
            })
            .collect();
        let text = format!("{} ({})", ring.join(" → "), why.join("; "));
        let first = cycle[0];
        problems.push(Problem::call(
            first,
            &calls[first].call.id,
            format!("dependency cycle: {text}"),
        ));
    }
    problems
}

/// The dependency graph as plain data, by call id (the seed's `build_dependency_graph`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DependencyGraph {
    /// Call ids grouped by level.
    pub levels: Vec<Vec<String>>,
    /// Every edge with its reason.
    pub edges: Vec<GraphEdge>,
    /// Calls with no edge in or out.
    pub independent: Vec<String>,
    /// Calls with at least one edge.
    pub dependent: Vec<String>,
}

/// One edge of a [`DependencyGraph`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GraphEdge {
    /// The earlier node.
    pub from: GraphNode,
    /// The later node.
    pub to: GraphNode,
    /// Why, in words (`depends_on`, `reference ${a}`, `write-after-read on file:x`, ...).
    pub reason: String,
}

/// An end of a [`GraphEdge`]: a call, by id (JSON: the id as a string), or a join between two
/// groups of accesses to one resource (JSON: `{"join": 0, "resource": "file:x"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum GraphNode {
    /// A call, by id.
    Call(String),
    /// A join: node `len() + join` of the plan.
    Join {
        /// Its number among the plan's joins.
        join: usize,
        /// The resource whose accesses it orders.
        resource: String,
    },
}

impl GraphNode {
    /// The call id, if this is a call.
    pub fn call_id(&self) -> Option<&str> {
        match self {
            GraphNode::Call(id) => Some(id),
            GraphNode::Join { .. } => None,
        }
    }
}

impl PartialEq<&str> for GraphNode {
    fn eq(&self, other: &&str) -> bool {
        self.call_id() == Some(*other)
    }
}

impl fmt::Display for GraphNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GraphNode::Call(id) => f.write_str(id),
            GraphNode::Join { join, resource } => write!(f, "join#{join} ({resource})"),
        }
    }
}

impl DependencyGraph {
    /// The graph of a plan.
    pub fn of(plan: &Plan) -> Self {
        let id = |i: usize| plan.calls[i].call.id.clone();
        let node = |i: usize| match i.checked_sub(plan.len()) {
            Some(join) => GraphNode::Join {
                join,
                resource: plan.joins[join].clone(),
            },
            None => GraphNode::Call(id(i)),
        };
        DependencyGraph {
            levels: plan
                .level_groups()
                .iter()
                .map(|g| g.iter().map(|&i| id(i)).collect())
                .collect(),
            edges: plan
                .edges
                .iter()
                .map(|e| GraphEdge {
                    from: node(e.from),
                    to: node(e.to),
                    reason: e.reason.to_string(),
                })
                .collect(),
            independent: plan.independent().into_iter().map(id).collect(),
            dependent: plan.dependent().into_iter().map(id).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    use super::*;

    #[test]
    fn a_planned_call_is_its_call_and_three_words() {
        assert!(size_of::<PlannedCall>() <= size_of::<ToolCall>() + 3 * size_of::<usize>());
    }

    #[test]
    fn resource_keys_read_as_a_slice_and_allocate_only_when_some() {
        assert_eq!(size_of::<ResourceKeys>(), size_of::<usize>());
        let none = ResourceKeys::from(Vec::new());
        assert!(none.is_empty() && none == ResourceKeys::default());
        let keys = ResourceKeys::from(vec!["file:a".to_owned(), "host:b".to_owned()]);
        assert_eq!(&keys[..], ["file:a", "host:b"]);
        assert_eq!((&keys).into_iter().count(), 2);
    }
}
