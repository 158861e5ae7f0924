//! `trackstream-web`: the web face's benchmark — buyer views per second and
//! their latency, and how fast a new scan reaches open buyer pages.
//!
//! The benchmark lives in [`trackstream_benches::web`]; this binary only
//! reads the command line and runs it. `--help` lists the flags.

fn main() -> anyhow::Result<()> {
    let opts = <trackstream_benches::web::Options as clap::Parser>::parse();
    trackstream_benches::web::main(&opts)
}
