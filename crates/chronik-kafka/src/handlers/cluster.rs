//! DescribeCluster.

use std::sync::Arc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;

use super::{Outcome, respond};
use crate::broker::{Broker, host_port};
use crate::codec::{self, Request};

pub fn describe(b: &Arc<Broker>, req: &Request) -> anyhow::Result<Outcome> {
    let _: DescribeClusterRequest = codec::decode(&req.body, req.version)?;
    let body = b.node.with_metadata(|m| {
        let brokers = m
            .nodes
            .values()
            .map(|n| {
                let (host, port) = host_port(&n.kafka_addr);
                DescribeClusterBroker::default()
                    .with_broker_id(BrokerId(n.id as i32))
                    .with_host(StrBytes::from_string(host))
                    .with_port(port)
            })
            .collect();
        DescribeClusterResponse::default()
            .with_cluster_id(StrBytes::from_string(m.cluster_id.map(|c| c.to_string()).unwrap_or_default()))
            .with_controller_id(BrokerId(b.node.metadata_leader().map_or(-1, |l| l as i32)))
            .with_brokers(brokers)
    });
    respond(req, &body)
}
