//! The target's admin APIs (`--to-admin`, comma-separated): imports go to a partition's
//! leader, so in a cluster each partition is imported through its leader's admin API when
//! that one was given, else through the first one given, whose node is first made the
//! partition's leader (it must host a replica of it).

use std::collections::BTreeMap;

use super::http;
use crate::error::MigrateError;

pub(crate) struct Admins {
    addrs: Vec<String>,
    /// Node id -> admin address, learned from each one's `GET /health`.
    by_node: BTreeMap<i32, String>,
}

impl Admins {
    pub fn new(list: &str) -> Admins {
        let addrs = list.split(',').map(str::trim).filter(|a| !a.is_empty()).map(String::from).collect();
        Admins { addrs, by_node: BTreeMap::new() }
    }

    /// The first address given (for messages).
    pub fn first(&self) -> &str {
        self.addrs.first().map_or("", String::as_str)
    }

    /// Learns which node each address is, once.
    pub async fn resolve(&mut self) -> Result<(), MigrateError> {
        if self.addrs.is_empty() {
            return Err(MigrateError::Http { addr: String::new(), what: "no admin API address given".into() });
        }
        let unknown: Vec<String> =
            self.addrs.iter().filter(|a| !self.by_node.values().any(|known| known == *a)).cloned().collect();
        for addr in unknown {
            let (status, answer) = http::get(&addr, "/health").await?;
            let id = serde_json::from_str::<serde_json::Value>(&answer).ok().and_then(|v| v["node_id"].as_i64());
            match id {
                Some(id) if status == 200 => {
                    self.by_node.insert(id as i32, addr);
                }
                _ => {
                    let what = format!("GET /health: {status} {answer} (not a Chronik admin API?)");
                    return Err(MigrateError::Http { addr, what });
                }
            }
        }
        Ok(())
    }

    /// Where to import a partition that `leader` leads.
    pub fn for_leader(&self, leader: i32) -> String {
        self.by_node.get(&leader).cloned().unwrap_or_else(|| self.first().to_string())
    }

    /// Makes the node behind `addr` the leader of `topic-partition` (answers once it leads).
    pub async fn lead_through(&self, addr: &str, topic: &str, partition: i32) -> Result<(), MigrateError> {
        let Some(node) = self.by_node.iter().find(|(_, a)| *a == addr).map(|(id, _)| *id) else {
            return Err(MigrateError::Http { addr: addr.to_string(), what: "node id not known".into() });
        };
        let body = serde_json::json!({ "topic": topic, "partition": partition, "to": node });
        let (status, answer) = http::post_json(addr, "/admin/cluster/transfer-leader", &body).await?;
        if status != 200 {
            let what = format!(
                "{topic}-{partition} is led by a node whose admin API was not given, and node {node} could not take \
                 it over ({status} {answer}); give every node's admin API in --to-admin, comma-separated"
            );
            return Err(MigrateError::Http { addr: addr.to_string(), what });
        }
        Ok(())
    }
}
