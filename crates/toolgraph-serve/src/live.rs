//! Executions this server runs or ran recently: their cancel tokens and replayable event
//! logs (what a late SSE subscriber receives first).

/// The executions in flight (and recently ended) in this server.
#[derive(Default)]
pub struct Registry {}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }
}
