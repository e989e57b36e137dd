use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Logs to stderr; `RUST_LOG` overrides the configured `log_level`. openraft reports every
/// group's elections at info and every abandoned client write (a producer that hung up) at
/// warn, which for thousands of partitions drowns the log: it is kept at error unless the
/// filter names it. Colours only when stderr is a terminal (a file or pipe gets plain text).
pub fn init(level: &str) {
    let directives = if level.contains("openraft") { level.to_string() } else { format!("{level},openraft=error") };
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&directives))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
