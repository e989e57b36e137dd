//! A load generator on the rdkafka crate for the latency runs: a producer that paces itself by
//! sleeping, where rdkafka_performance's `-r` paces by polling in a loop that keeps a whole core
//! busy (on two cores shared with the broker that loop, not the broker, would be measured).
//!
//! Messages carry rdkafka_performance's latency stamp (`LATENCY:<wall clock µs>`), so its
//! consumer (`-C -l`) measures produce-to-consume time. A paced message is stamped with the time
//! it was due, not the time it was sent: a producer that falls behind (starved of CPU, or held
//! up by a full queue) sends late, and that lateness counts against the measured latency rather
//! than being hidden by a fresh stamp.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};

use crate::stats::Latencies;

/// How long the producer sleeps between bursts: short against the linger, long enough that
/// waking up costs little.
const PACE_TICK: Duration = Duration::from_micros(200);

pub struct Load<'a> {
    pub bootstrap: &'a str,
    pub topic: &'a str,
    pub message_size: usize,
    pub linger_ms: f64,
    pub count: u64,
    /// Messages per second; `None` sends as fast as librdkafka takes them.
    pub rate: Option<f64>,
}

#[derive(Default)]
struct Deliveries {
    failed: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
    /// Stamp to acknowledgement, per delivered message.
    acked: std::sync::Mutex<Latencies>,
}

struct Context(Arc<Deliveries>);

impl ClientContext for Context {}

impl ProducerContext for Context {
    /// The message's stamp, in µs.
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, stamp_us: usize) {
        match result {
            Ok(_) => self.0.acked.lock().unwrap().push(wall_clock_us().saturating_sub(stamp_us as u64)),
            Err((e, _)) => {
                self.0.failed.fetch_add(1, Ordering::Relaxed);
                self.0.first_error.lock().unwrap().get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// What a producer run achieved.
pub struct Produced {
    /// Messages per second, from the first send to the last delivery.
    pub rate: f64,
    /// Each message's time from its stamp to the broker's acknowledgement (acks=all).
    pub acked: Latencies,
    /// Paced: how late each burst was sent against when its first message was due.
    pub send_lag: Latencies,
}

/// Produces `load.count` stamped messages (acks=all) and waits for every delivery.
pub fn produce(load: &Load<'_>) -> anyhow::Result<Produced> {
    let deliveries = Arc::new(Deliveries::default());
    let producer: BaseProducer<Context> = ClientConfig::new()
        .set("bootstrap.servers", load.bootstrap)
        .set("acks", "all")
        .set("linger.ms", load.linger_ms.to_string())
        .create_with_context(Context(deliveries.clone()))
        .context("creating the producer")?;
    let mut payload = vec![0u8; load.message_size];
    let started = Instant::now();
    let started_us = wall_clock_us();
    let mut send_lag = Latencies::default();
    let mut sent = 0;
    while sent < load.count {
        let due = match load.rate {
            Some(rate) => load.count.min((started.elapsed().as_secs_f64() * rate) as u64 + 1),
            None => load.count,
        };
        // When message `n` is due, in wall-clock µs (paced runs only).
        let due_us = |n: u64| load.rate.map(|rate| started_us + (n as f64 * 1e6 / rate) as u64);
        if let (Some(first_due), true) = (due_us(sent), sent < due) {
            send_lag.push(wall_clock_us().saturating_sub(first_due));
        }
        while sent < due {
            let stamp_us = due_us(sent).unwrap_or_else(wall_clock_us);
            stamp(&mut payload, stamp_us);
            match producer
                .send(BaseRecord::<(), [u8], usize>::with_opaque_to(load.topic, stamp_us as usize).payload(&payload))
            {
                Ok(()) => sent += 1,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    // Sleep, then serve what arrived: the rdkafka crate's poll with a timeout
                    // spins through its last millisecond (zero-timeout polls and clock reads),
                    // which took a quarter of this 2-core machine from the brokers measured.
                    std::thread::sleep(Duration::from_millis(1));
                    producer.poll(Duration::ZERO);
                }
                Err((e, _)) => return Err(e).context("producing"),
            }
        }
        producer.poll(Duration::ZERO);
        if load.rate.is_some() {
            std::thread::sleep(PACE_TICK);
        }
    }
    producer.flush(Duration::from_secs(60)).context("waiting for deliveries")?;
    let elapsed = started.elapsed().as_secs_f64();
    let failed = deliveries.failed.load(Ordering::Relaxed);
    anyhow::ensure!(
        failed == 0,
        "{failed} of {} messages failed; the first: {}",
        load.count,
        deliveries.first_error.lock().unwrap().as_deref().unwrap_or("?")
    );
    let acked = std::mem::take(&mut *deliveries.acked.lock().unwrap());
    Ok(Produced { rate: load.count as f64 / elapsed, acked, send_lag })
}

#[derive(clap::Args)]
pub struct ProduceArgs {
    #[arg(long)]
    bootstrap: String,
    #[arg(long)]
    topic: String,
    /// Messages per second; omitted, as fast as librdkafka takes them.
    #[arg(long)]
    rate: Option<f64>,
    #[arg(long)]
    count: u64,
    #[arg(long, default_value_t = 0.5)]
    linger_ms: f64,
    #[arg(long, default_value_t = 1024)]
    message_size: usize,
}

pub fn run(a: ProduceArgs) -> anyhow::Result<()> {
    let load = Load {
        bootstrap: &a.bootstrap,
        topic: &a.topic,
        message_size: a.message_size,
        linger_ms: a.linger_ms,
        count: a.count,
        rate: a.rate,
    };
    let mut p = produce(&load)?;
    println!("produced_msgs_per_sec={:.0}", p.rate);
    println!("acked_p50_ms={:.3}", p.acked.percentile_ms(50.0));
    println!("acked_p99_ms={:.3}", p.acked.percentile_ms(99.0));
    println!("send_lag_p99_ms={:.3}", p.send_lag.percentile_ms(99.0));
    println!("send_lag_max_ms={:.3}", p.send_lag.percentile_ms(100.0));
    Ok(())
}

fn wall_clock_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Writes rdkafka_performance's latency stamp at the start of `payload`, NUL-terminated.
fn stamp(payload: &mut [u8], us: u64) {
    use std::io::Write;
    // A payload too short for the stamp gets as much of it as fits.
    let _ = write!(std::io::Cursor::new(payload), "LATENCY:{us}\0");
}

#[cfg(test)]
mod tests {
    #[test]
    fn stamp_is_what_rdkafka_performance_parses() {
        let mut p = vec![7u8; 64];
        super::stamp(&mut p, 1_764_300_000_123_456);
        let text = std::str::from_utf8(&p[..p.iter().position(|b| *b == 0).unwrap()]).unwrap();
        assert_eq!(text, "LATENCY:1764300000123456");
        assert_eq!(p[text.len() + 1..], [7u8; 64][text.len() + 1..], "nothing written past the stamp");
    }
}
