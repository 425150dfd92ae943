//! The state machine contract: what an application (the broker) implements so that the raft
//! crate can drive it. The adapter that turns it into openraft's `RaftStateMachine` lives beside
//! it in this crate.

use crate::types::{AppResponse, Entry, LogId, SnapshotMeta, StoredMembership};

/// Why a state machine could not apply, snapshot or restore. Any such error stops the node:
/// a state machine that failed half-way must not keep applying.
#[derive(Debug, thiserror::Error)]
pub enum StateMachineError {
    #[error("state machine storage failed: {0}")]
    Storage(String),
    #[error("snapshot is corrupt: {0}")]
    CorruptSnapshot(String),
    #[error("invariant violated while applying log index {index}: {reason}")]
    Invariant { index: u64, reason: String },
}

/// An application state machine replicated by Raft.
///
/// Rules (STYLE.md rule 8): `apply` is deterministic (no clock, no network, no hash-map order in
/// its output) and writes the applied log id and the last membership in the same storage
/// transaction as the changes they cover, so a crash never leaves them out of step.
pub trait StateMachine: Send + Sync + 'static {
    /// Applies committed entries in log order and returns one response per entry (blank and
    /// membership entries get `AppResponse::default()`). Everything, including the applied log
    /// id and membership, is made durable in one transaction before returning.
    fn apply(&mut self, entries: Vec<Entry>) -> Result<Vec<AppResponse>, StateMachineError>;

    /// The last applied log id and the last membership applied, as stored.
    fn applied_state(&self) -> (Option<LogId>, StoredMembership);

    /// Serializes the whole state (as of `applied_state`) for a snapshot.
    fn snapshot(&mut self) -> Result<Vec<u8>, StateMachineError>;

    /// Replaces the whole state with a snapshot made by `snapshot` on some member.
    fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        data: &[u8],
    ) -> Result<(), StateMachineError>;
}
