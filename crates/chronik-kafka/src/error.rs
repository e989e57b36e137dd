//! Kafka error codes: what the client is told for each error below the protocol. Every
//! mapping from a cluster, metadata, idempotence, read or group error to a code is here, and
//! the table test below pins them.

use chronik_cluster::{ClusterError, IdempotenceError, MetaError, ReadError};
use kafka_protocol::ResponseError;

use crate::groups::{DeleteGroupError, GroupError, OffsetStoreError};

/// A Kafka error code with the reason shown to the client (where the version carries one).
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ResponseError,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ResponseError, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into() }
    }
}

/// The code for a cluster error. Retriable codes where the client should retry (elsewhere, or
/// later); a storage error where the partition cannot take the write; an unknown server error
/// for what should not happen.
pub fn cluster_code(e: &ClusterError) -> ResponseError {
    match e {
        ClusterError::NotLeader { .. } => ResponseError::NotLeaderOrFollower,
        ClusterError::Rejected(m) => meta_code(m),
        ClusterError::Timeout(_) => ResponseError::RequestTimedOut,
        ClusterError::PeerUnreachable { .. } => ResponseError::NetworkException,
        // The metadata leader changed under a forwarded request: the client retries.
        ClusterError::Forwarded { .. } => ResponseError::NotController,
        ClusterError::EntryRefused { .. } => ResponseError::CorruptMessage,
        ClusterError::GroupStopped { .. }
        | ClusterError::Wal(_)
        | ClusterError::Io { .. }
        | ClusterError::Log(_)
        | ClusterError::Transfer(_) => ResponseError::KafkaStorageError,
        ClusterError::Identity(_)
        | ClusterError::Locked(_)
        | ClusterError::DataDir(_)
        | ClusterError::Settings(_)
        | ClusterError::Join(_)
        | ClusterError::Removed { .. }
        | ClusterError::NotVoter { .. }
        | ClusterError::Internal(_) => ResponseError::UnknownServerError,
    }
}

pub fn meta_code(e: &MetaError) -> ResponseError {
    match e {
        MetaError::TopicExists(_) => ResponseError::TopicAlreadyExists,
        MetaError::UnknownTopic(_) | MetaError::UnknownPartition { .. } => ResponseError::UnknownTopicOrPartition,
        MetaError::UnknownNode(_) | MetaError::InvalidReplicas(_) => ResponseError::InvalidReplicaAssignment,
        MetaError::MoveInProgress { .. } => ResponseError::ReassignmentInProgress,
        MetaError::CannotRemoveNode { .. } | MetaError::CannotPromote { .. } => ResponseError::InvalidRequest,
        MetaError::InvalidTopicName { .. } => ResponseError::InvalidTopicException,
        MetaError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        MetaError::InvalidReplicationFactor { .. } => ResponseError::InvalidReplicationFactor,
        MetaError::ClusterIdMismatch { .. } | MetaError::NodeRemoved(_) => ResponseError::InvalidRequest,
    }
}

pub fn idempotence_code(e: &IdempotenceError) -> ResponseError {
    match e {
        IdempotenceError::OutOfOrder { .. } => ResponseError::OutOfOrderSequenceNumber,
        IdempotenceError::StaleEpoch { .. } => ResponseError::InvalidProducerEpoch,
        IdempotenceError::Cluster(e) => cluster_code(e),
    }
}

pub fn read_code(e: &ReadError) -> ResponseError {
    match e {
        ReadError::OutOfRange { .. } => ResponseError::OffsetOutOfRange,
        ReadError::Storage(_) | ReadError::Segment(_) => ResponseError::KafkaStorageError,
    }
}

/// The code for a failed offset commit (or delete). The other errors only happen at start.
pub fn offset_store_code(e: &OffsetStoreError) -> ResponseError {
    match e {
        // The offsets partition's leadership moved: so did the coordinator.
        OffsetStoreError::Append(ClusterError::NotLeader { .. }) | OffsetStoreError::NotCoordinator => {
            ResponseError::NotCoordinator
        }
        OffsetStoreError::Append(e) | OffsetStoreError::Create(e) => cluster_code(e),
        OffsetStoreError::Batch(e) => offset_store_code(e),
        OffsetStoreError::Stopped => ResponseError::CoordinatorNotAvailable,
        OffsetStoreError::NoLeader | OffsetStoreError::NotHosted | OffsetStoreError::CatchUp { .. } => {
            ResponseError::CoordinatorNotAvailable
        }
        OffsetStoreError::ReadFailed { .. } => ResponseError::KafkaStorageError,
        OffsetStoreError::BadEntry { .. } | OffsetStoreError::Encode(_) => ResponseError::UnknownServerError,
    }
}

pub fn delete_group_code(e: &DeleteGroupError) -> ResponseError {
    match e {
        DeleteGroupError::NotEmpty => ResponseError::NonEmptyGroup,
        DeleteGroupError::NotFound => ResponseError::GroupIdNotFound,
        DeleteGroupError::Store(e) => offset_store_code(e),
    }
}

impl GroupError {
    pub fn code(self) -> ResponseError {
        match self {
            GroupError::UnknownMemberId => ResponseError::UnknownMemberId,
            GroupError::NotCoordinator => ResponseError::NotCoordinator,
            GroupError::IllegalGeneration => ResponseError::IllegalGeneration,
            GroupError::RebalanceInProgress => ResponseError::RebalanceInProgress,
            GroupError::InconsistentGroupProtocol => ResponseError::InconsistentGroupProtocol,
            GroupError::MemberIdRequired => ResponseError::MemberIdRequired,
            GroupError::NonEmptyGroup => ResponseError::NonEmptyGroup,
        }
    }
}

/// `impl From<$error> for ApiError` through its code function: the client gets the code and
/// the error's text.
macro_rules! api_error_from {
    ($($error:ty => $code:ident),* $(,)?) => {$(
        impl From<$error> for ApiError {
            fn from(e: $error) -> Self {
                ApiError::new($code(&e), e.to_string())
            }
        }
    )*};
}

api_error_from!(
    ClusterError => cluster_code,
    MetaError => meta_code,
    IdempotenceError => idempotence_code,
    OffsetStoreError => offset_store_code,
    DeleteGroupError => delete_group_code,
);

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use chronik_wal::WalError;
    use uuid::Uuid;

    use super::*;

    #[test]
    fn cluster_errors_map_to_kafka_codes() {
        let io = || std::io::Error::other("disk said no");
        let cases: Vec<(ClusterError, ResponseError)> = vec![
            (ClusterError::NotLeader { group: 3, leader: Some(2) }, ResponseError::NotLeaderOrFollower),
            (ClusterError::NotLeader { group: 3, leader: None }, ResponseError::NotLeaderOrFollower),
            (ClusterError::Timeout("a leader".into()), ResponseError::RequestTimedOut),
            (ClusterError::PeerUnreachable { node: 2, source: "refused".into() }, ResponseError::NetworkException),
            (ClusterError::Forwarded { node: 2, reason: "not the leader".into() }, ResponseError::NotController),
            (ClusterError::EntryRefused { group: 3, reason: "out of order".into() }, ResponseError::CorruptMessage),
            (ClusterError::GroupStopped { group: 3, source: "shut down".into() }, ResponseError::KafkaStorageError),
            (
                ClusterError::Wal(WalError::DiskFull { path: PathBuf::from("/d"), detail: "ENOSPC".into() }),
                ResponseError::KafkaStorageError,
            ),
            (ClusterError::Wal(WalError::Closed), ResponseError::KafkaStorageError),
            (ClusterError::Io { context: "partition t-0".into(), source: io() }, ResponseError::KafkaStorageError),
            (
                ClusterError::Transfer(chronik_cluster::TransferError::Protocol("a gap".into())),
                ResponseError::KafkaStorageError,
            ),
            (ClusterError::Locked(PathBuf::from("/d")), ResponseError::UnknownServerError),
            (ClusterError::DataDir("foreign data".into()), ResponseError::UnknownServerError),
            (ClusterError::Settings("bad".into()), ResponseError::UnknownServerError),
            (ClusterError::Internal("a bug".into()), ResponseError::UnknownServerError),
            (ClusterError::Rejected(MetaError::TopicExists("t".into())), ResponseError::TopicAlreadyExists),
            (ClusterError::Rejected(MetaError::UnknownTopic("t".into())), ResponseError::UnknownTopicOrPartition),
            (
                ClusterError::Rejected(MetaError::InvalidTopicName { name: "a/b".into(), reason: "slash".into() }),
                ResponseError::InvalidTopicException,
            ),
            (ClusterError::Rejected(MetaError::InvalidPartitions("0".into())), ResponseError::InvalidPartitions),
            (
                ClusterError::Rejected(MetaError::InvalidReplicationFactor { requested: 3, available: 1 }),
                ResponseError::InvalidReplicationFactor,
            ),
            (
                ClusterError::Rejected(MetaError::ClusterIdMismatch { existing: Uuid::nil(), proposed: Uuid::max() }),
                ResponseError::InvalidRequest,
            ),
            (ClusterError::Rejected(MetaError::NodeRemoved(4)), ResponseError::InvalidRequest),
        ];
        for (error, code) in cases {
            let shown = error.to_string();
            let api = ApiError::from(error);
            assert_eq!(api.code, code, "{shown}");
            assert_eq!(api.message, shown, "the client is told the cause");
        }
    }

    #[test]
    fn idempotence_read_and_group_errors_map_to_kafka_codes() {
        let cases: Vec<(IdempotenceError, ResponseError)> = vec![
            (IdempotenceError::OutOfOrder { expected: 5, got: 7 }, ResponseError::OutOfOrderSequenceNumber),
            (IdempotenceError::StaleEpoch { current: 2, got: 1 }, ResponseError::InvalidProducerEpoch),
            (ClusterError::NotLeader { group: 1, leader: None }.into(), ResponseError::NotLeaderOrFollower),
            (ClusterError::Timeout("the log applied".into()).into(), ResponseError::RequestTimedOut),
        ];
        for (error, code) in cases {
            assert_eq!(idempotence_code(&error), code, "{error}");
        }
        let reads = [
            (ReadError::OutOfRange { offset: 9, log_start: 0, log_end: 5 }, ResponseError::OffsetOutOfRange),
            (ReadError::Storage(WalError::Closed), ResponseError::KafkaStorageError),
        ];
        for (error, code) in reads {
            assert_eq!(read_code(&error), code, "{error}");
        }
        let groups = [
            (GroupError::UnknownMemberId, ResponseError::UnknownMemberId),
            (GroupError::IllegalGeneration, ResponseError::IllegalGeneration),
            (GroupError::RebalanceInProgress, ResponseError::RebalanceInProgress),
            (GroupError::InconsistentGroupProtocol, ResponseError::InconsistentGroupProtocol),
            (GroupError::MemberIdRequired, ResponseError::MemberIdRequired),
            (GroupError::NonEmptyGroup, ResponseError::NonEmptyGroup),
        ];
        for (error, code) in groups {
            assert_eq!(error.code(), code, "{error:?}");
        }
        let stores = [
            (
                OffsetStoreError::Append(ClusterError::NotLeader { group: 1, leader: None }),
                ResponseError::NotCoordinator,
            ),
            (
                OffsetStoreError::Append(ClusterError::Wal(WalError::DiskFull {
                    path: "/d".into(),
                    detail: "full".into(),
                })),
                ResponseError::KafkaStorageError,
            ),
            (OffsetStoreError::NoLeader, ResponseError::CoordinatorNotAvailable),
            (OffsetStoreError::NotCoordinator, ResponseError::NotCoordinator),
            (OffsetStoreError::CatchUp { applied: 1, target: 2 }, ResponseError::CoordinatorNotAvailable),
        ];
        for (error, code) in stores {
            assert_eq!(offset_store_code(&error), code, "{error}");
        }
        let deletes = [
            (DeleteGroupError::NotEmpty, ResponseError::NonEmptyGroup),
            (DeleteGroupError::NotFound, ResponseError::GroupIdNotFound),
            (DeleteGroupError::Store(OffsetStoreError::NoLeader), ResponseError::CoordinatorNotAvailable),
        ];
        for (error, code) in deletes {
            assert_eq!(delete_group_code(&error), code, "{error}");
        }
    }
}
