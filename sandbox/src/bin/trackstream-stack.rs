//! `trackstream-stack create-topics --brokers HOST:PORT [--partitions N]`: creates
//! every trackstream topic through the Kafka admin API, so the same command works
//! against tansu locally and Apache Kafka in production. `shipments` and
//! `tracking.events` get the same partition count (co-partitioning).

use anyhow::{Context, bail};
use trackstream_proto::topics;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    match args.first().map(String::as_str) {
        Some("create-topics") => {
            let brokers = value("--brokers")
                .or_else(|| std::env::var("KAFKA_BROKERS").ok())
                .context("--brokers or KAFKA_BROKERS is required")?;
            let partitions: i32 = value("--partitions")
                .as_deref()
                .unwrap_or("8")
                .parse()
                .context("--partitions must be a number")?;
            let wanted: Vec<(&str, i32)> = topics::ALL.iter().map(|t| (*t, partitions)).collect();
            trackstream_testkit::kafka::create_topics(&brokers, &wanted)
                .await
                .map_err(anyhow::Error::msg)
                .context("creating topics")?;
            eprintln!(
                "[stack] topics ready on {brokers}: {} × {partitions} partitions",
                topics::ALL.len()
            );
            Ok(())
        }
        _ => bail!("usage: trackstream-stack create-topics --brokers HOST:PORT [--partitions N]"),
    }
}
