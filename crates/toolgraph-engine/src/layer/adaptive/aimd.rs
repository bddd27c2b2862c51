//! The AIMD arithmetic of an adaptive limit: additive increase (slow start first),
//! multiplicative decrease at most once per round, within 1 and the ceiling. Pure: no
//! clock, no locks — the layer calls it under its key's lock.

/// An additive-increase / multiplicative-decrease limit: pure arithmetic, no clock.
#[derive(Debug, Clone, PartialEq)]
pub struct Aimd {
    limit: f64,
    ceiling: usize,
    factor: f64,
    /// Until the first overload, each success adds one (doubling per round trip).
    slow_start: bool,
    /// Bumped at each decrease; an attempt remembers the epoch it began in.
    epoch: u64,
}

impl Aimd {
    /// A limit starting at `initial` (within `1..=ceiling`), cut by `factor` on overload.
    pub fn new(initial: usize, ceiling: usize, factor: f64) -> Self {
        let ceiling = ceiling.max(1);
        Aimd {
            limit: initial.clamp(1, ceiling) as f64,
            ceiling,
            factor,
            slow_start: true,
            epoch: 0,
        }
    }

    /// The limit in force: whole slots, within `1..=ceiling`.
    pub fn limit(&self) -> usize {
        (self.limit.floor() as usize).clamp(1, self.ceiling)
    }

    /// The ceiling.
    pub fn ceiling(&self) -> usize {
        self.ceiling
    }

    /// The decrease factor.
    pub fn factor(&self) -> f64 {
        self.factor
    }

    /// The current decrease epoch (what an attempt starting now remembers).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// A success, with `in_flight` attempts running when it ended (itself included): grows
    /// the limit when at least half of it was in use.
    pub fn on_success(&mut self, in_flight: usize) {
        if in_flight * 2 < self.limit() {
            return;
        }
        let step = if self.slow_start {
            1.0
        } else {
            1.0 / self.limit
        };
        self.limit = (self.limit + step).min(self.ceiling as f64);
    }

    /// An overload seen by an attempt that began in `epoch`: cuts the limit, unless a cut
    /// happened since that attempt began. Returns whether it cut.
    pub fn on_overload(&mut self, epoch: u64) -> bool {
        if epoch < self.epoch {
            return false;
        }
        self.limit = (self.limit * self.factor).max(1.0);
        self.slow_start = false;
        self.epoch += 1;
        true
    }

    /// A new ceiling (the configuration changed); the limit follows it down.
    pub fn set_ceiling(&mut self, ceiling: usize) {
        self.ceiling = ceiling.max(1);
        self.limit = self.limit.min(self.ceiling as f64);
    }

    /// A new decrease factor (the configuration changed).
    pub fn set_factor(&mut self, factor: f64) {
        self.factor = factor;
    }
}
