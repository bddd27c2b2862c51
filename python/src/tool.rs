//! A Python function as a toolgraph [`Tool`].
//!
//! An `async def` tool is handed to its execution's Python driver through the
//! [`Bridge`](crate::bridge::Bridge) and awaited there, on the caller's event loop. A plain
//! `def` tool is *blocking*: the engine runs it on tokio's blocking pool (so its slots stay
//! taken until it returns), where it takes the GIL for exactly its own code.

use std::sync::Arc;

use pyo3::exceptions::PyRuntimeWarning;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use serde_json::Value;
use toolgraph::core::{Access, CallContext, ResourceAccess, Tool, ToolError, ToolFuture, ToolSpec};

use crate::bridge::{AbandonOnDrop, CURRENT};
use crate::convert;

/// The package's Python helpers the native side calls back into.
pub struct Helpers {
    /// `_to_json(obj)`: plain data for an object `convert` does not know.
    pub to_json: Py<PyAny>,
    /// `_error_text(exc) -> (text, transient)`: a tool's exception as an error message
    /// (`Type: message`, then the traceback) and whether a retry may help.
    pub error_text: Py<PyAny>,
}

/// How a Python tool runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `async def`: on the caller's event loop, through the driver.
    Async,
    /// `def`: on a blocking thread, with the GIL for its own code.
    Sync,
}

/// A Python function registered as a tool.
pub struct PyTool {
    /// Name, schema and traits.
    pub spec: ToolSpec,
    /// Its index among the executor's Python tools (the driver's table).
    pub index: usize,
    /// How it runs.
    pub kind: Kind,
    /// `f(args: dict)`; for async tools the driver calls it, not Rust.
    pub func: Py<PyAny>,
    /// `resources(args) -> [(access, key), ...]`, when declared.
    pub resources: Option<Py<PyAny>>,
    /// The package's helpers.
    pub helpers: Arc<Helpers>,
}

impl PyTool {
    fn run_sync(&self, args: &Value) -> Result<Value, ToolError> {
        Python::attach(|py| {
            let outcome = convert::to_py(py, args)
                .and_then(|a| self.func.bind(py).call1((a,)))
                .and_then(|out| convert::from_py(&out, self.helpers.to_json.bind(py)));
            outcome.map_err(|err| error_of(py, &self.helpers, err))
        })
    }
}

/// A Python exception as a tool error, worded by the package's helper.
pub fn error_of(py: Python<'_>, helpers: &Helpers, err: PyErr) -> ToolError {
    let described = helpers
        .error_text
        .bind(py)
        .call1((err.value(py),))
        .and_then(|t| t.extract::<(String, bool)>());
    match described {
        Ok((text, true)) => ToolError::transient(text),
        Ok((text, false)) => ToolError::permanent(text),
        Err(_) => ToolError::permanent(err.to_string()),
    }
}

impl Tool for PyTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn resources(&self, args: &Value) -> Vec<ResourceAccess> {
        let Some(f) = &self.resources else {
            return Vec::new();
        };
        Python::attach(|py| {
            let declared = convert::to_py(py, args)
                .and_then(|a| f.bind(py).call1((a,)))
                .and_then(|r| r.extract::<Vec<(String, String)>>());
            let tool_key = format!("pytool:{}", self.spec.name);
            match declared {
                // Every call of a tool with a `resources` function reads the tool's own
                // key, which a call whose function raised writes.
                Ok(list) => list
                    .into_iter()
                    .map(|(access, key)| ResourceAccess {
                        key,
                        access: if access.eq_ignore_ascii_case("read") {
                            Access::Read
                        } else {
                            Access::Write
                        },
                    })
                    .chain(std::iter::once(ResourceAccess::read(tool_key)))
                    .collect(),
                // The planner cannot fail a call here; a `resources` function that raises
                // makes the call exclusive of its tool's other calls instead (the safe side),
                // and says so with a RuntimeWarning.
                Err(err) => {
                    let message = format!(
                        "the resources function of tool {} raised {err}; the call is ordered \
                         after and before every other call of the tool",
                        self.spec.name
                    );
                    if let Ok(message) = std::ffi::CString::new(message) {
                        let category = py.get_type::<PyRuntimeWarning>();
                        let _ = PyErr::warn(py, &category, &message, 1);
                    }
                    vec![ResourceAccess::write(tool_key)]
                }
            }
        })
    }

    fn call<'a>(&'a self, args: Arc<Value>, _ctx: CallContext) -> ToolFuture<'a> {
        match self.kind {
            Kind::Sync => Box::pin(async move { self.run_sync(&args) }),
            Kind::Async => {
                let Ok(bridge) = CURRENT.try_with(Arc::clone) else {
                    let name = self.spec.name.clone();
                    return Box::pin(async move {
                        Err(ToolError::permanent(format!(
                            "the async Python tool {name} runs only inside execute_parallel, \
                             on its event loop"
                        )))
                    });
                };
                let (token, answer) = bridge.submit(self.index, args);
                let guard = AbandonOnDrop {
                    bridge,
                    token: Some(token),
                };
                Box::pin(async move {
                    let mut guard = guard;
                    let answer = answer.await;
                    guard.answered();
                    answer.unwrap_or_else(|_| {
                        Err(ToolError::permanent(
                            "the Python driver stopped before the call ended",
                        ))
                    })
                })
            }
        }
    }
}

/// Reads a `(token, status, value)` answer from the driver: status 0 = the value is the
/// output, 1 = an error text (permanent), 2 = an error text (transient).
pub fn answer_of(
    item: &Bound<'_, PyAny>,
    helpers: &Helpers,
) -> PyResult<(u64, crate::bridge::Answer)> {
    let py = item.py();
    let tuple = item.cast::<PyTuple>()?;
    let token: u64 = tuple.get_item(0)?.extract()?;
    let status: u8 = tuple.get_item(1)?.extract()?;
    let value = tuple.get_item(2)?;
    let answer = match status {
        0 => match convert::from_py(&value, helpers.to_json.bind(py)) {
            Ok(v) => Ok(v),
            Err(err) => Err(ToolError::permanent(format!(
                "the tool's result cannot be carried as JSON: {}",
                err.value(py)
            ))),
        },
        2 => Err(ToolError::transient(value.extract::<String>()?)),
        _ => Err(ToolError::permanent(value.extract::<String>()?)),
    };
    Ok((token, answer))
}
