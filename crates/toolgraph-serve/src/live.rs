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

    // Stand-ins for serve-ops until the API branch's registry lands (the integrator keeps
    // theirs): same signatures, nothing tracked.

    /// How many executions are running now.
    pub fn running(&self) -> usize {
        0
    }

    /// From now on, launching is refused.
    pub fn refuse_new(&self) {}

    /// Waits until no execution runs or `grace` elapsed; then cancels the rest and waits
    /// for their records.
    pub async fn drain(&self, grace: std::time::Duration) {
        let _ = grace;
    }
}
