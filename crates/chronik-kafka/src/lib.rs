//! chronik-kafka: the Kafka wire protocol in front of chronik-cluster. Framing and version
//! negotiation ([`codec`], [`versions`]), the listener ([`server`]), one handler module per
//! API, and the consumer group coordinator ([`groups`]).

// Unsafe code: a global allocator is unsafe by definition (see the module for why each call is
// sound).
#[allow(unsafe_code)]
pub mod alloc;
pub mod broker;
pub mod codec;
mod error;
pub mod frame;
pub mod groups;
pub mod handlers;
pub mod request_metrics;
pub mod server;
mod validate;
pub mod versions;

pub use broker::{Broker, BrokerConfig, StartError};
pub use error::ApiError;
