//! openraft's own storage test suite against the redb log store plus the state-machine adapter
//! over the test key-value state machine, each build in a fresh temp directory.

use openraft::errors::ErrorSource;
use openraft::testing::log::{StoreBuilder, Suite};
use raftmq_raft::log_store::{LogStore, LogStoreConfig};
use raftmq_raft::sm_adapter::StateMachineStore;
use raftmq_raft::testing::KvStateMachine;
use raftmq_raft::{StorageError, TypeConfig};

/// Keeps a build's temp directory alive until the Suite is done with the store.
struct Guard {
    _dir: tempfile::TempDir,
}

struct RedbStoreBuilder;

fn setup_error(e: impl std::error::Error + 'static) -> StorageError {
    StorageError::write(openraft::impls::BoxedErrorSource::from_error(&e))
}

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, Guard> for RedbStoreBuilder {
    async fn build(&self) -> Result<(Guard, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().map_err(setup_error)?;
        let log_store =
            LogStore::open(dir.path(), LogStoreConfig::default()).map_err(setup_error)?;
        let kv = KvStateMachine::open(&dir.path().join("kv.redb")).map_err(setup_error)?;
        let sm =
            StateMachineStore::open(dir.path(), kv, log_store.reader()).map_err(setup_error)?;
        Ok((Guard { _dir: dir }, log_store, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_passes() {
    if let Err(e) = Suite::test_all(RedbStoreBuilder).await {
        panic!("openraft storage suite failed: {e}");
    }
}
