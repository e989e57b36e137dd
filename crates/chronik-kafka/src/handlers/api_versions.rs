//! ApiVersions, with the KIP-511 fallback.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::ApiVersionsResponse;

use super::{Outcome, respond};
use crate::codec::{self, Request};
use crate::versions;

pub fn handle(req: &Request) -> anyhow::Result<Outcome> {
    // The body (client software name and version) changes nothing here; it must still decode.
    let _: kafka_protocol::messages::ApiVersionsRequest = codec::decode(&req.body, req.version)?;
    respond(req, &ApiVersionsResponse::default().with_api_keys(versions::api_versions()))
}

/// A version above ours: answer at v0 (header v0) with UNSUPPORTED_VERSION and our table, so
/// the client retries with a version we speak.
pub fn unsupported_version(req: &Request) -> anyhow::Result<Outcome> {
    let body = ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(versions::api_versions());
    Ok(Outcome::Response(codec::encode_with_header_version(req.correlation_id, 0, 0, &body)?))
}
