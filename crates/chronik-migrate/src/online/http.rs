//! One HTTP/1.1 request to a target node's admin API (imports, its node id, a leadership
//! transfer), over a fresh connection.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::MigrateError;

const TIMEOUT: Duration = Duration::from_secs(60);
const MAX_ANSWER: u64 = 1 << 20;

/// POSTs `body` (record batches) to `path` on `addr`; (status, response body).
pub async fn post(addr: &str, path: &str, body: &[u8]) -> Result<(u16, String), MigrateError> {
    request(addr, "POST", path, "application/octet-stream", body).await
}

/// POSTs a JSON document.
pub async fn post_json(addr: &str, path: &str, body: &serde_json::Value) -> Result<(u16, String), MigrateError> {
    request(addr, "POST", path, "application/json", body.to_string().as_bytes()).await
}

pub async fn get(addr: &str, path: &str) -> Result<(u16, String), MigrateError> {
    request(addr, "GET", path, "application/json", &[]).await
}

async fn request(
    addr: &str,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> Result<(u16, String), MigrateError> {
    let err = |what: String| MigrateError::Http { addr: addr.to_string(), what };
    let exchange = async {
        let mut s = TcpStream::connect(addr).await?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await?;
        s.write_all(body).await?;
        let mut answer = Vec::new();
        s.take(MAX_ANSWER).read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| err(format!("{method} {path} timed out")))?
        .map_err(|e| err(format!("{method} {path}: {e}")))?;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| err(format!("{method} {path}: not an HTTP answer")))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}
