//! `chronik-server admin`: the admin API's operations from the command line, for operators
//! without curl at hand. One HTTP/1.1 request per call over a plain TCP connection (the API
//! is JSON over HTTP; nothing here needs a client library).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};

use crate::cli::AdminCommand;

/// How long the node may take to answer (a leadership transfer waits up to 5 s for the new
/// leader, a proposal up to 10 s for the metadata group).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `command` against the admin API at `addr`, prints the answer; exit code 1 when the
/// node refuses (its error is printed to stderr).
pub fn run(addr: &str, command: AdminCommand) -> anyhow::Result<u8> {
    let (method, path, body) = match command {
        AdminCommand::Members => ("GET", "/admin/cluster/members", None),
        AdminCommand::Leader => ("GET", "/admin/cluster/leader", None),
        AdminCommand::Partitions => ("GET", "/admin/cluster/partitions", None),
        AdminCommand::Moves => ("GET", "/admin/cluster/moves", None),
        AdminCommand::RemoveNode { node_id } => {
            ("POST", "/admin/cluster/remove-node", Some(json!({ "node_id": node_id })))
        }
        AdminCommand::Promote { node_id } => ("POST", "/admin/cluster/promote", Some(json!({ "node_id": node_id }))),
        AdminCommand::MovePartition { topic, partition, replicas } => (
            "POST",
            "/admin/cluster/move-partition",
            Some(json!({ "topic": topic, "partition": partition, "replicas": replicas })),
        ),
        AdminCommand::Snapshot => ("POST", "/admin/cluster/snapshot", Some(json!({}))),
        AdminCommand::Snapshots => ("GET", "/admin/cluster/snapshots", None),
        AdminCommand::TransferLeader { to, topic, partition } => (
            "POST",
            "/admin/cluster/transfer-leader",
            Some(json!({ "topic": topic, "partition": partition, "to": to })),
        ),
    };
    let (status, answer) = request(addr, method, path, body.as_ref())?;
    let pretty = serde_json::from_str::<Value>(&answer)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or(answer);
    if (200..300).contains(&status) {
        println!("{pretty}");
        Ok(0)
    } else {
        eprintln!("{method} {path}: HTTP {status}\n{pretty}");
        Ok(1)
    }
}

/// One request; answers the status code and the body.
fn request(addr: &str, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connecting to the admin API at {addr}"))?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response).with_context(|| format!("reading the answer of {addr}"))?;
    let status = response.split_whitespace().nth(1).and_then(|c| c.parse().ok());
    let status = status.with_context(|| format!("{addr} did not answer HTTP: {response:.200}"))?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}
