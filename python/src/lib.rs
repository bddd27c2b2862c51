//! `toolgraph._native`: the Rust half of the Python package.
//!
//! The Python half (`python/toolgraph/`) holds the API people use — `ParallelExecutor`,
//! `tool`, the result type, the event-loop driver; this half holds toolgraph's runtime:
//! [`engine`] (one `Runtime` per `ParallelExecutor`: planning, scheduling, limits, history,
//! store), [`tool`] (Python functions as tools), [`bridge`] (how the scheduler hands calls
//! of `async def` tools to the driver on the caller's event loop, in batches) and
//! [`convert`] (Python objects ⇄ JSON). The GIL is released while Rust parses, plans and
//! waits; the scheduler's threads never take it.

use std::sync::OnceLock;

use pyo3::prelude::*;

mod bridge;
mod convert;
mod engine;
mod tool;

pyo3::create_exception!(
    _native,
    ToolGraphError,
    pyo3::exceptions::PyRuntimeError,
    "toolgraph could not set up or run: a configuration, store or tool server problem."
);
pyo3::create_exception!(
    _native,
    InputError,
    pyo3::exceptions::PyValueError,
    "A batch of tool calls was rejected before anything ran; the message names each call."
);

/// Rust's allocations in the extension (Python objects keep Python's allocator).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// toolgraph's tokio runtime, shared by every executor of the process.
pub(crate) fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .thread_name("toolgraph")
            .max_blocking_threads(blocking_threads())
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("toolgraph cannot start its tokio runtime: {e}"))
    })
}

/// Threads for plain `def` tools (and the engine's other blocking work): every one of them
/// needs the GIL, so hundreds (tokio's default is 512) only queue for it — 10,000 no-op calls
/// took 176 µs each that way. `TOOLGRAPH_PYTHON_THREADS` overrides the default.
fn blocking_threads() -> usize {
    const DEFAULT: usize = 32;
    std::env::var("TOOLGRAPH_PYTHON_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT)
}

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    // Work a layer spawns for a call (the cache's shared run) keeps the call's bridge.
    toolgraph::engine::layer::set_context_hook(Box::new(|work| {
        match bridge::CURRENT.try_with(std::sync::Arc::clone) {
            Ok(bridge) => Box::pin(bridge::CURRENT.scope(bridge, work)),
            Err(_) => work,
        }
    }));
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("ToolGraphError", py.get_type::<ToolGraphError>())?;
    m.add("InputError", py.get_type::<InputError>())?;
    m.add_class::<engine::Engine>()?;
    m.add_class::<engine::Run>()?;
    Ok(())
}
