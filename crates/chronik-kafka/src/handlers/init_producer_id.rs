//! InitProducerId for idempotent producers. Transactional ids are refused: transactions are not
//! implemented.

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::{Outcome, respond};
use crate::broker::Broker;
use crate::codec::{self, Request};

pub async fn handle(b: &Arc<Broker>, req: &Request) -> anyhow::Result<Outcome> {
    let r: InitProducerIdRequest = codec::decode(&req.body, req.version)?;
    if r.transactional_id.as_ref().is_some_and(|t| !t.is_empty()) {
        let body =
            InitProducerIdResponse::default().with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code());
        return respond(req, &body);
    }
    let body = match b.node.allocate_producer_id().await {
        Ok(id) => InitProducerIdResponse::default().with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err(e) => {
            tracing::warn!("allocating a producer id: {e}");
            InitProducerIdResponse::default().with_error_code(ResponseError::CoordinatorNotAvailable.code())
        }
    };
    respond(req, &body)
}
