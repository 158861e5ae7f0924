//! `trackstream-incidents`: the incident detector's benchmark — detection
//! delay, false incidents per week, linking, messages saved, cost per event.
//!
//! The benchmark lives in [`trackstream_benches::incidents`]; this binary only
//! reads the command line and runs it. `--help` lists the flags.

fn main() -> anyhow::Result<()> {
    let opts = <trackstream_benches::incidents::Options as clap::Parser>::parse();
    trackstream_benches::incidents::main(&opts)
}
