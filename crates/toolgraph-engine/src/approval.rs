//! [`Approvals`]: an executor's approval policy, its approver, and what "always" answers it
//! has remembered — the scheduler asks it once per call, when the call becomes ready.
//!
//! The scheduler's side of the protocol (see `schedule`): a ready call whose mode is `ask`
//! sends its [`ApprovalRequest`] and waits *outside every limit*: it holds no global,
//! tool, resource or budget slot, and the loop keeps admitting and running every other
//! call meanwhile. Approved, it joins the ready queue like any ready call; its timeout
//! starts only when it starts running. Denied (by the policy, by the approver, or because
//! nothing can ask), it ends `error` with kind `denied` before it starts; dependants over
//! data edges are skipped, and calls ordered after it only by a resource hazard run (the
//! denied call did nothing, so there is nothing to order them against).
//!
//! Invariant: no lock is held across an await; the approver's future owns everything it
//! needs.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use toolgraph_core::{
    ApprovalClass, ApprovalDecision, ApprovalMode, ApprovalPolicy, ApprovalRequest, SharedApprover,
};

/// An executor's approvals: shared by its clones, so "always" holds for a whole session.
pub struct Approvals {
    policy: ApprovalPolicy,
    approver: Option<SharedApprover>,
    /// Tools the approver answered "always" for.
    always: Mutex<HashSet<String>>,
}

/// What the scheduler does with a call, before it runs.
pub(crate) enum Verdict {
    /// Run it.
    Run,
    /// Ask: the future answers.
    Ask(BoxFuture<'static, ApprovalDecision>),
    /// Refuse it, with this message (kind `denied`).
    Deny(String),
}

impl Approvals {
    /// `policy`, answered by `approver` where it says `ask` (without one, such calls are
    /// denied, saying that nothing can ask).
    pub fn new(policy: ApprovalPolicy, approver: Option<SharedApprover>) -> Approvals {
        Approvals {
            policy,
            approver,
            always: Mutex::new(HashSet::new()),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &ApprovalPolicy {
        &self.policy
    }

    /// True when every call runs without asking: the scheduler then classifies nothing.
    pub fn is_auto(&self) -> bool {
        self.policy.is_auto()
    }

    /// Remembers an "always" answer for `tool`.
    pub(crate) fn remember_always(&self, tool: &str) {
        match self.always.lock() {
            Ok(mut set) => set.insert(tool.to_owned()),
            Err(poisoned) => poisoned.into_inner().insert(tool.to_owned()),
        };
    }

    fn approved_always(&self, tool: &str) -> bool {
        match self.always.lock() {
            Ok(set) => set.contains(tool),
            Err(poisoned) => poisoned.into_inner().contains(tool),
        }
    }

    /// The mode the policy gives a call of `tool` in `class`.
    pub fn mode(&self, tool: &str, class: ApprovalClass) -> ApprovalMode {
        self.policy.mode(tool, class)
    }

    /// What to do with `request`.
    pub(crate) fn verdict(&self, request: ApprovalRequest) -> Verdict {
        let (tool, class) = (request.tool.as_str(), request.class);
        match self.mode(tool, class) {
            ApprovalMode::Auto => Verdict::Run,
            ApprovalMode::Deny => Verdict::Deny(format!(
                "denied by policy: {tool} is a {class} call and the approval policy says deny \
                 (change it with --approval or [approvals])"
            )),
            ApprovalMode::Ask if self.approved_always(tool) => Verdict::Run,
            ApprovalMode::Ask => match &self.approver {
                Some(approver) => Verdict::Ask(approver.decide(request)),
                None => Verdict::Deny(format!(
                    "denied: {tool} needs approval and nothing can ask: it is a {class} call and \
                     the approval policy says ask; allow it with --approval auto or \
                     [approvals.tools] {tool} = \"auto\""
                )),
            },
        }
    }
}

impl std::fmt::Debug for Approvals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Approvals")
            .field("policy", &self.policy)
            .field("approver", &self.approver.is_some())
            .finish()
    }
}

/// Shared approvals.
pub type SharedApprovals = Arc<Approvals>;
