use tracing_subscriber::EnvFilter;

/// Logs to stderr; `RUST_LOG` overrides the configured `log_level`.
pub fn init(level: &str) {
    let filter = EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(level)).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
