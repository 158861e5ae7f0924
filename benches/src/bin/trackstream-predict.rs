//! `trackstream-predict`: the delivery-prediction accuracy benchmark.
//!
//! The benchmark lives in [`trackstream_benches::predict`]; this binary only
//! reads the command line and runs it. `--help` lists the flags.

fn main() -> anyhow::Result<()> {
    let opts = <trackstream_benches::predict::Options as clap::Parser>::parse();
    trackstream_benches::predict::run(&opts)
}
