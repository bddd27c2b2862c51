//! `Engine`: one toolgraph runtime (tools, limits, history, store) behind a Python
//! `ParallelExecutor`, and `Run`: one execution's handle for the Python driver.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use serde_json::Value;
use toolgraph::core::{
    ParallelExecutorConfig, Problem, ToolCall, ToolSet, ToolSpec, error_chain, parse_tool_calls,
};
use toolgraph::engine::{DependencyGraph, GraphNode, Plan};
use toolgraph::{Config, ExecuteOptions, Execution, ParallelExecutor, Runtime, RuntimeError};

use crate::bridge::{Bridge, CURRENT};
use crate::tool::{Helpers, Kind, PyTool, answer_of};
use crate::{InputError, ToolGraphError, convert, rt};

/// Where a Python tool's error text turns into its traceback.
const TRACEBACK: &str = "\n\nTraceback (most recent call last):\n";

/// Keeps a value whose drop may need toolgraph's tokio runtime (store pools, MCP servers)
/// and drops it inside that runtime, whichever Python thread lets it go.
struct InRuntime<T>(Option<T>);

impl<T> std::ops::Deref for InRuntime<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.0.as_ref().expect("present until dropped")
    }
}

impl<T> Drop for InRuntime<T> {
    fn drop(&mut self) {
        let _inside = rt().enter();
        self.0.take();
    }
}

/// One runtime for one Python `ParallelExecutor`.
#[pyclass(frozen, module = "toolgraph._native")]
pub struct Engine {
    runtime: InRuntime<Runtime>,
    helpers: Arc<Helpers>,
}

fn value_error(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

fn get<'py>(def: &Bound<'py, PyDict>, key: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
    Ok(def.get_item(key)?.filter(|v| !v.is_none()))
}

/// A Python tool definition (a dict the package builds) as a tool.
fn tool_of(
    index: usize,
    def: &Bound<'_, PyDict>,
    helpers: &Arc<Helpers>,
) -> PyResult<Arc<dyn toolgraph::core::Tool>> {
    let py = def.py();
    let name: String = get(def, "name")?
        .ok_or_else(|| value_error("a tool definition without a name"))?
        .extract()?;
    let mut spec = ToolSpec::new(name.clone());
    if let Some(d) = get(def, "description")? {
        spec = spec.description(d.extract::<String>()?);
    }
    if let Some(p) = get(def, "parameters")? {
        spec = spec.parameters(convert::from_py(&p, helpers.to_json.bind(py))?);
    }
    let is_async: bool = get(def, "is_async")?.map_or(Ok(false), |v| v.extract())?;
    if get(def, "idempotent")?.map_or(Ok(false), |v| v.extract())? {
        spec = spec.idempotent();
    }
    if get(def, "exclusive")?.map_or(Ok(false), |v| v.extract())? {
        spec = spec.exclusive();
    }
    if let Some(n) = get(def, "max_concurrency")? {
        spec = spec.max_concurrency(n.extract()?);
    }
    if let Some(ms) = get(def, "timeout_ms")? {
        spec = spec.timeout_ms(ms.extract()?);
    }
    let cpu: f64 = get(def, "cpu")?.map_or(Ok(0.0), |v| v.extract())?;
    let memory_mb: u64 = get(def, "memory_mb")?.map_or(Ok(0), |v| v.extract())?;
    if cpu > 0.0 || memory_mb > 0 {
        spec = spec.cost(cpu, memory_mb);
    }
    if !is_async {
        spec = spec.blocking();
    }
    let func = get(def, "func")?
        .ok_or_else(|| value_error(format!("tool {name}: no function")))?
        .unbind();
    let resources = get(def, "resources")?.map(Bound::unbind);
    Ok(Arc::new(PyTool {
        spec,
        index,
        kind: if is_async { Kind::Async } else { Kind::Sync },
        func,
        resources,
        helpers: helpers.clone(),
    }))
}

fn executor_config(
    config: Option<&Bound<'_, PyAny>>,
    base: ParallelExecutorConfig,
    helpers: &Helpers,
) -> PyResult<ParallelExecutorConfig> {
    let Some(config) = config else {
        return Ok(base);
    };
    let mut merged = serde_json::to_value(&base).map_err(value_error)?;
    let given = convert::from_py(config, helpers.to_json.bind(config.py()))?;
    let (Value::Object(target), Value::Object(given)) = (&mut merged, given) else {
        return Err(value_error("the executor configuration must be a mapping"));
    };
    for (k, v) in given {
        if !v.is_null() {
            target.insert(k, v);
        }
    }
    let config: ParallelExecutorConfig =
        serde_json::from_value(merged).map_err(|e| value_error(format!("configuration: {e}")))?;
    config
        .validate()
        .map_err(|e| value_error(format!("configuration: {e}")))?;
    Ok(config)
}

/// Tool calls from Python objects: JSON values, then every accepted wire shape.
fn calls_of(
    py: Python<'_>,
    calls: &Bound<'_, PyAny>,
    helpers: &Helpers,
) -> PyResult<Vec<ToolCall>> {
    let fallback = helpers.to_json.bind(py);
    let value = match calls.cast::<PyList>() {
        // A list of calls: a call that cannot be carried as JSON is named by its id (or
        // position), like every other problem with a call.
        Ok(list) => {
            let mut items = Vec::with_capacity(list.len());
            for (position, item) in list.iter().enumerate() {
                let value = convert::from_py(&item, fallback).map_err(|err| {
                    let message = format!("cannot be read as JSON: {}", err.value(py));
                    InputError::new_err(problem_of(&item, position, message).to_string())
                })?;
                items.push(value);
            }
            Value::Array(items)
        }
        Err(_) => convert::from_py(calls, fallback).map_err(|err| {
            InputError::new_err(Problem::input(err.value(py).to_string()).to_string())
        })?,
    };
    py.detach(|| parse_tool_calls(&value))
        .map_err(|e| InputError::new_err(e.to_string()))
}

/// A problem with a call that could not be converted, named by its id when it has one
/// (worded like every other problem with a call).
fn problem_of(item: &Bound<'_, PyAny>, position: usize, message: String) -> Problem {
    let id = match item.cast::<PyDict>() {
        Ok(dict) => dict.get_item("id").ok().flatten(),
        Err(_) => item.getattr("id").ok(),
    };
    match id.and_then(|id| id.extract::<String>().ok()) {
        Some(id) => Problem::call(position, id, message),
        None => Problem::position(position, message),
    }
}

#[pymethods]
impl Engine {
    /// `tools`: definitions (dicts); `helpers`: `(to_json, error_text)`; `config`: the
    /// executor configuration (seed names); `db`: a store URL to record into;
    /// `config_file`/`from_config`: load `toolgraph.toml` (built-in tools, MCP servers,
    /// store) as the CLI does.
    #[new]
    #[pyo3(signature = (tools, helpers, config=None, db=None, config_file=None, from_config=false))]
    fn new(
        py: Python<'_>,
        tools: &Bound<'_, PyList>,
        helpers: (Py<PyAny>, Py<PyAny>),
        config: Option<&Bound<'_, PyAny>>,
        db: Option<String>,
        config_file: Option<std::path::PathBuf>,
        from_config: bool,
    ) -> PyResult<Engine> {
        let helpers = Arc::new(Helpers {
            to_json: helpers.0,
            error_text: helpers.1,
        });
        let mut defs = Vec::with_capacity(tools.len());
        for (index, def) in tools.iter().enumerate() {
            defs.push(tool_of(index, def.cast::<PyDict>()?, &helpers)?);
        }
        let runtime = if from_config {
            let (mut file_config, _path) = Config::load(config_file.as_deref(), std::env::vars())
                .map_err(|e| {
                ToolGraphError::new_err(format!("configuration: {}", error_chain(&e)))
            })?;
            file_config.executor = executor_config(config, file_config.executor.clone(), &helpers)?;
            if let Some(url) = db {
                file_config.store.url = url;
                file_config.store.record = true;
            }
            py.detach(|| {
                rt().block_on(Runtime::start_with_tools(&file_config, defs))
                    .map_err(|e| error_chain(&e))
            })
            .map_err(ToolGraphError::new_err)?
        } else {
            let config = executor_config(config, ParallelExecutorConfig::default(), &helpers)?;
            let mut set = ToolSet::new();
            for tool in defs {
                let name = tool.spec().name.clone();
                set.register_arc(tool)
                    .map_err(|e| value_error(format!("tool {name}: {e}")))?;
            }
            let executor = ParallelExecutor::new(set, config)
                .map_err(|e| value_error(format!("configuration: {e}")))?;
            let store = match db {
                None => None,
                Some(url) => Some(
                    py.detach(|| {
                        rt().block_on(toolgraph::store::open(&url)).map_err(|e| {
                            format!(
                                "opening the store {}: {}",
                                toolgraph::store::hide_password(&url),
                                error_chain(&e)
                            )
                        })
                    })
                    .map_err(ToolGraphError::new_err)?,
                ),
            };
            Runtime::new(executor, store)
        };
        Ok(Engine {
            runtime: InRuntime(Some(runtime)),
            helpers,
        })
    }

    /// Checks and plans `calls`, then starts running them; the driver follows the handle.
    #[pyo3(signature = (calls, max_parallel_calls=None, session=None))]
    fn start(
        &self,
        py: Python<'_>,
        calls: &Bound<'_, PyAny>,
        max_parallel_calls: Option<usize>,
        session: Option<String>,
    ) -> PyResult<Run> {
        let calls = calls_of(py, calls, &self.helpers)?;
        let runtime: Runtime = (*self.runtime).clone();
        let plan = py
            .detach(|| runtime.plan(calls))
            .map_err(|e| InputError::new_err(e.to_string()))?;
        let config = match max_parallel_calls {
            None => None,
            Some(0) => return Err(value_error("max_parallel_calls must be at least 1")),
            Some(n) => {
                let mut c = (*runtime.executor().config()).clone();
                c.max_parallel_calls = n;
                Some(Arc::new(c))
            }
        };
        let bridge = Arc::new(Bridge::new().map_err(|e| ToolGraphError::new_err(e.to_string()))?);
        let outcome: Arc<Mutex<Option<Result<Execution, RuntimeError>>>> = Arc::default();
        let options = ExecuteOptions {
            cancel: bridge.cancel.clone(),
            session,
            config,
            ..ExecuteOptions::default()
        };
        let (b, out) = (bridge.clone(), outcome.clone());
        rt().spawn(CURRENT.scope(bridge.clone(), async move {
            let result = runtime.execute(&plan, options).await;
            *out.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
            b.finish();
        }));
        Ok(Run {
            bridge,
            outcome,
            helpers: self.helpers.clone(),
        })
    }

    /// The seed's planning API in one answer: `independent`, `dependent` (positions),
    /// `levels`, per call `dependencies`/`dependents` (positions) and the `edges` with
    /// their reasons.
    fn analyze<'py>(
        &self,
        py: Python<'py>,
        calls: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let calls = calls_of(py, calls, &self.helpers)?;
        let runtime: &Runtime = &self.runtime;
        let plan = py
            .detach(|| runtime.plan(calls))
            .map_err(|e| InputError::new_err(e.to_string()))?;
        let value = analysis(&plan);
        convert::to_py(py, &value)
    }

    /// `get_performance_stats()`.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let stats = self.runtime.executor().get_performance_stats();
        convert::to_py(py, &serde_json::to_value(stats).map_err(value_error)?)
    }

    /// The live configuration.
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let config = self.runtime.executor().config();
        convert::to_py(py, &serde_json::to_value(&*config).map_err(value_error)?)
    }

    /// `update_config`: the given keys over the live configuration; running executions see
    /// it at their next admission.
    fn update_config(&self, config: &Bound<'_, PyAny>) -> PyResult<()> {
        let current = (*self.runtime.executor().config()).clone();
        let next = executor_config(Some(config), current, &self.helpers)?;
        self.runtime
            .executor()
            .update_config(next)
            .map_err(|e| value_error(format!("configuration: {e}")))
    }

    /// Every tool: `(name, description, parameters)`.
    fn tool_specs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for entry in self.runtime.executor().tools().entries() {
            let spec = entry.tool.spec();
            list.append((
                spec.name.as_str(),
                spec.description.as_str(),
                convert::to_py(py, &spec.parameters)?,
            ))?;
        }
        Ok(list)
    }

    /// The store's description, when the engine records.
    fn store(&self) -> Option<String> {
        self.runtime.store().map(|s| s.describe())
    }
}

fn analysis(plan: &Plan) -> Value {
    let graph = DependencyGraph::of(plan);
    let calls = plan.calls();
    let position: HashMap<&str, usize> = calls
        .iter()
        .enumerate()
        .map(|(i, c)| (c.call.id.as_str(), i))
        .collect();
    let key = |n: &GraphNode| match n {
        GraphNode::Call(id) => format!("c:{id}"),
        GraphNode::Join { join, .. } => format!("j:{join}"),
    };
    // Predecessors per node; joins are looked through to the calls behind them.
    let mut preds: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for edge in &graph.edges {
        preds
            .entry(key(&edge.to))
            .or_default()
            .push(key(&edge.from));
    }
    fn calls_behind(
        node: &str,
        preds: &BTreeMap<String, Vec<String>>,
        out: &mut BTreeSet<String>,
        seen: &mut BTreeSet<String>,
    ) {
        for p in preds.get(node).into_iter().flatten() {
            if !seen.insert(p.clone()) {
                continue;
            }
            if p.starts_with("c:") {
                out.insert(p.clone());
            } else {
                calls_behind(p, preds, out, seen);
            }
        }
    }
    let mut dependencies: Vec<Vec<usize>> = vec![Vec::new(); calls.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); calls.len()];
    for (i, call) in calls.iter().enumerate() {
        let mut behind = BTreeSet::new();
        calls_behind(
            &format!("c:{}", call.call.id),
            &preds,
            &mut behind,
            &mut BTreeSet::new(),
        );
        for p in behind {
            if let Some(&j) = position.get(&p[2..]) {
                dependencies[i].push(j);
                dependents[j].push(i);
            }
        }
    }
    for d in &mut dependents {
        d.sort_unstable();
    }
    let per_call: Vec<Value> = calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            serde_json::json!({
                "index": i,
                "id": c.call.id,
                "tool": c.call.name,
                "dependencies": dependencies[i],
                "dependents": dependents[i],
            })
        })
        .collect();
    let edges: Vec<Value> = graph
        .edges
        .iter()
        .map(|e| {
            let name = |n: &GraphNode| match n {
                GraphNode::Call(id) => id.clone(),
                GraphNode::Join { join, resource } => format!("join {join} ({resource})"),
            };
            serde_json::json!({"from": name(&e.from), "to": name(&e.to), "reason": e.reason})
        })
        .collect();
    serde_json::json!({
        "independent": plan.independent(),
        "dependent": plan.dependent(),
        "levels": plan.level_groups(),
        "calls": per_call,
        "edges": edges,
    })
}

/// One running execution, as the Python driver sees it.
#[pyclass(frozen, module = "toolgraph._native")]
pub struct Run {
    bridge: Arc<Bridge>,
    outcome: Arc<Mutex<Option<Result<Execution, RuntimeError>>>>,
    helpers: Arc<Helpers>,
}

impl Drop for Run {
    fn drop(&mut self) {
        // A driver that lets go of its run stops it: nothing runs unobserved.
        self.bridge.cancel.cancel();
    }
}

#[pymethods]
impl Run {
    /// The descriptor to watch for wake-ups (read and discard what it holds).
    fn wake_fd(&self) -> i32 {
        self.bridge.wake_fd()
    }

    /// `(jobs, cancels, done)`: calls to start as `(token, tool index, args)`,
    /// tokens whose calls no longer wait, and whether the execution has ended. With nothing
    /// to do, the next submission wakes the driver.
    fn take<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let (jobs, cancels, done) = self.bridge.take();
        let list = PyList::empty(py);
        for job in jobs {
            let args = convert::to_py(py, &job.args)?;
            list.append((job.token, job.tool, args))?;
        }
        (list, cancels, done).into_pyobject(py)
    }

    /// Answers, each `(token, status, value)` (status 0: output; 1: error text; 2: error
    /// text, worth a retry).
    fn complete(&self, answers: &Bound<'_, PyList>) -> PyResult<()> {
        let mut batch = Vec::with_capacity(answers.len());
        for item in answers.iter() {
            batch.push(answer_of(&item, &self.helpers)?);
        }
        self.bridge.complete(batch);
        Ok(())
    }

    /// Cancels the execution: calls not yet ended end `cancelled`.
    fn cancel(&self) {
        self.bridge.cancel.cancel();
    }

    /// The result (once `take` said done): a dict with the seed's fields.
    fn result<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let taken = self
            .outcome
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match taken {
            None => Err(PyRuntimeError::new_err(
                "the execution has not ended (or its result was already taken)",
            )),
            Some(Err(RuntimeError::Input(e))) => Err(InputError::new_err(e.to_string())),
            Some(Err(e)) => Err(ToolGraphError::new_err(error_chain(&e))),
            Some(Ok(execution)) => result_dict(py, execution),
        }
    }
}

fn split_traceback(message: &str) -> (&str, Option<&str>) {
    match message.find(TRACEBACK) {
        Some(at) => (&message[..at], Some(&message[at + 2..])),
        None => (message, None),
    }
}

fn result_dict(py: Python<'_>, execution: Execution) -> PyResult<Bound<'_, PyDict>> {
    let Execution {
        result,
        id,
        recording_error,
    } = execution;
    let out = PyDict::new(py);
    out.set_item(intern!(py, "success"), result.success)?;
    out.set_item(intern!(py, "total_time_ms"), result.total_time_ms)?;
    out.set_item(intern!(py, "parallel_time_ms"), result.parallel_time_ms)?;
    out.set_item(
        intern!(py, "sequential_time_estimate_ms"),
        result.sequential_time_estimate_ms,
    )?;
    out.set_item(intern!(py, "speedup"), result.speedup)?;
    out.set_item(intern!(py, "critical_path_ms"), result.critical_path_ms)?;
    out.set_item(intern!(py, "efficiency"), result.efficiency)?;
    let errors: Vec<&str> = result.errors.iter().map(|e| split_traceback(e).0).collect();
    out.set_item(intern!(py, "errors"), errors)?;
    out.set_item(
        intern!(py, "batches"),
        convert::to_py(
            py,
            &serde_json::to_value(&result.batches).map_err(value_error)?,
        )?,
    )?;
    let metadata = convert::to_py(
        py,
        &serde_json::to_value(&result.metadata).map_err(value_error)?,
    )?;
    let metadata = metadata.cast_into::<PyDict>()?;
    metadata.set_item(intern!(py, "execution_id"), id)?;
    metadata.set_item(intern!(py, "recording_error"), recording_error)?;
    out.set_item(intern!(py, "metadata"), metadata)?;
    let results = PyList::empty(py);
    for r in &result.results {
        let d = PyDict::new(py);
        d.set_item(intern!(py, "id"), &r.id)?;
        d.set_item(intern!(py, "tool"), &r.name)?;
        d.set_item(intern!(py, "success"), r.is_ok())?;
        d.set_item(intern!(py, "status"), r.status.as_str())?;
        match &r.output {
            Some(v) => d.set_item(intern!(py, "data"), convert::to_py(py, v)?)?,
            None => d.set_item(intern!(py, "data"), py.None())?,
        }
        match &r.error {
            Some(e) => {
                let (message, traceback) = split_traceback(&e.message);
                d.set_item(intern!(py, "error"), message)?;
                d.set_item(
                    intern!(py, "error_kind"),
                    serde_json::to_value(e.kind)
                        .ok()
                        .and_then(|k| k.as_str().map(str::to_owned)),
                )?;
                let error_type = traceback.map(|_| message.split(": ").next().unwrap_or(message));
                d.set_item(intern!(py, "error_type"), error_type)?;
                d.set_item(intern!(py, "traceback"), traceback)?;
            }
            None => {
                d.set_item(intern!(py, "error"), py.None())?;
                d.set_item(intern!(py, "error_kind"), py.None())?;
                d.set_item(intern!(py, "error_type"), py.None())?;
                d.set_item(intern!(py, "traceback"), py.None())?;
            }
        }
        d.set_item(intern!(py, "attempts"), r.attempts)?;
        d.set_item(intern!(py, "queued_ms"), r.queued_ms)?;
        d.set_item(intern!(py, "started_ms"), r.started_ms)?;
        d.set_item(intern!(py, "finished_ms"), r.finished_ms)?;
        d.set_item(intern!(py, "duration_ms"), r.duration_ms)?;
        d.set_item(intern!(py, "level"), r.level)?;
        d.set_item(intern!(py, "worker"), r.worker.as_deref())?;
        d.set_item(intern!(py, "cached"), r.cached)?;
        results.append(d)?;
    }
    out.set_item(intern!(py, "results"), results)?;
    Ok(out)
}
