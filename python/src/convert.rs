//! Python objects ⇄ JSON values, with the GIL held, without a trip through JSON text.
//!
//! Plain data (`None`, `bool`, `int`, `float`, `str`, `dict`, `list`, `tuple`) converts here;
//! anything else goes through the package's Python helper `_to_json` once (pydantic models,
//! dataclasses, SDK objects, `SkillResult`s), and what it returns converts here.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::map::Entry;
use serde_json::{Map, Number, Value};

/// Nesting beyond this is refused (a cycle, or data no tool should take).
const MAX_DEPTH: usize = 256;

/// A JSON value as a Python object.
pub fn to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                PyFloat::new(py, n.as_f64().unwrap_or(f64::NAN)).into_any()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (key, item) in map {
                dict.set_item(key, to_py(py, item)?)?;
            }
            dict.into_any()
        }
    })
}

/// A Python object as a JSON value; `fallback` (the package's `_to_json`) turns any other
/// object into plain data first.
pub fn from_py(obj: &Bound<'_, PyAny>, fallback: &Bound<'_, PyAny>) -> PyResult<Value> {
    convert(obj, fallback, 0)
}

/// A dict key that is not a string, as `json.dumps` writes it: `true`/`false`/`null`, an
/// integer's digits, a float's `repr`; any other key by its `str()`.
fn json_key(key: &Bound<'_, PyAny>) -> PyResult<String> {
    if key.is_none() {
        return Ok("null".into());
    }
    if let Ok(b) = key.cast::<PyBool>() {
        return Ok(if b.is_true() { "true" } else { "false" }.into());
    }
    if key.cast::<PyFloat>().is_ok() {
        return Ok(key.repr()?.to_cow()?.into_owned());
    }
    Ok(key.str()?.to_cow()?.into_owned())
}

fn convert(obj: &Bound<'_, PyAny>, fallback: &Bound<'_, PyAny>, depth: usize) -> PyResult<Value> {
    if depth > MAX_DEPTH {
        return Err(PyValueError::new_err(format!(
            "the value nests deeper than {MAX_DEPTH} levels (a cycle?)"
        )));
    }
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::String(s.to_cow()?.into_owned()));
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if let Ok(i) = obj.cast::<PyInt>() {
        if let Ok(v) = i.extract::<i64>() {
            return Ok(Value::from(v));
        }
        if let Ok(v) = i.extract::<u64>() {
            return Ok(Value::from(v));
        }
        // Beyond 64 bits: refused rather than silently rounded to a float.
        return Err(PyValueError::new_err(format!(
            "the integer {} does not fit in 64 bits (pass it as a string)",
            i.str()?.to_cow()?
        )));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Ok(Number::from_f64(f.value()).map_or(Value::Null, Value::Number));
    }
    if let Ok(dict) = obj.cast::<PyDict>() {
        let mut map = Map::with_capacity(dict.len());
        for (key, item) in dict.iter() {
            let text = match key.cast::<PyString>() {
                Ok(s) => s.to_cow()?.into_owned(),
                Err(_) => json_key(&key)?,
            };
            let value = convert(&item, fallback, depth + 1)?;
            match map.entry(text) {
                Entry::Vacant(slot) => {
                    slot.insert(value);
                }
                Entry::Occupied(slot) => {
                    return Err(PyValueError::new_err(format!(
                        "two keys of one dict are both {:?} in JSON (e.g. 1 and '1')",
                        slot.key()
                    )));
                }
            }
        }
        return Ok(Value::Object(map));
    }
    if let Ok(list) = obj.cast::<PyList>() {
        let mut items = Vec::with_capacity(list.len());
        for item in list.iter() {
            items.push(convert(&item, fallback, depth + 1)?);
        }
        return Ok(Value::Array(items));
    }
    if let Ok(tuple) = obj.cast::<PyTuple>() {
        let mut items = Vec::with_capacity(tuple.len());
        for item in tuple.iter() {
            items.push(convert(&item, fallback, depth + 1)?);
        }
        return Ok(Value::Array(items));
    }
    let plain = fallback.call1((obj,))?;
    if plain.is(obj) || plain.get_type().is(obj.get_type()) {
        // The helper could not make it plainer: its text, as json.dumps(default=str) would.
        return Ok(Value::String(obj.str()?.to_cow()?.into_owned()));
    }
    convert(&plain, fallback, depth + 1)
}
