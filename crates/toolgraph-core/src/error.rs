//! Input errors: everything wrong with a batch, reported before anything runs.
//!
//! One [`Problem`] per defect, each naming the call it is about, so a user (or a model) can
//! fix all of them in one go.

use std::fmt;

/// One defect in the input, about one call where it can be pinned to one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The call's id, when the call has one.
    pub call_id: Option<String>,
    /// The call's position in the input (0-based), when the problem is about one call.
    pub position: Option<usize>,
    /// What is wrong, in words.
    pub message: String,
}

impl Problem {
    /// A problem about the call at `position` with id `call_id`.
    pub fn call(position: usize, call_id: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            call_id: Some(call_id.into()),
            position: Some(position),
            message: message.into(),
        }
    }

    /// A problem about the call at `position`, which has no usable id.
    pub fn position(position: usize, message: impl Into<String>) -> Self {
        Problem {
            call_id: None,
            position: Some(position),
            message: message.into(),
        }
    }

    /// A problem about the input as a whole.
    pub fn input(message: impl Into<String>) -> Self {
        Problem {
            call_id: None,
            position: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.call_id, self.position) {
            (Some(id), _) => write!(f, "call {id}: {}", self.message),
            (None, Some(pos)) => write!(f, "call #{pos}: {}", self.message),
            (None, None) => write!(f, "input: {}", self.message),
        }
    }
}

/// The input was rejected; nothing ran.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
pub struct InputError {
    /// Every problem found, in input order.
    pub problems: Vec<Problem>,
}

impl InputError {
    /// An error with a single problem.
    pub fn single(problem: Problem) -> Self {
        InputError {
            problems: vec![problem],
        }
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "input rejected ({n} problem{})",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

/// An error and its sources on one line, joined with `: `, each source's text left out when
/// the text so far already holds it (many messages include their source's).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}
