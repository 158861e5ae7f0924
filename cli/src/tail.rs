//! `trackstream tail TOPIC`: a topic's records as JSON lines ([`crate::decode`]).

use clap::Args;

use crate::Kafka;
use crate::records::{From, Reader};

/// `tail` options.
#[derive(Args)]
pub struct TailArgs {
    /// The topic (any topic; the pipeline's are decoded).
    topic: String,
    #[command(flatten)]
    kafka: Kafka,
    /// Where to start in every partition: `beginning`, `end`, or an RFC 3339
    /// time (the first record at or after it).
    #[arg(long, default_value = "beginning")]
    from: From,
    /// Keep waiting for new records (until interrupted or --max); without it,
    /// stop at the end each partition had when tail started.
    #[arg(long, short)]
    follow: bool,
    /// Stop after this many records.
    #[arg(long)]
    max: Option<u64>,
}

/// Runs `tail`.
pub async fn run(args: TailArgs) -> anyhow::Result<()> {
    let mut reader =
        Reader::open(&args.kafka.config(), &args.topic, args.from, args.follow).await?;
    let mut printed = 0;
    while args.max.is_none_or(|max| printed < max) {
        let Some(record) = reader.next().await? else {
            break;
        };
        crate::emit(format_args!("{}", crate::decode::record_json(&record)))?;
        printed += 1;
    }
    Ok(())
}
