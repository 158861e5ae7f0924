//! `trackstream-bench`: the end-to-end benchmark (`benches/run.sh` runs it).
//!
//! The benchmark lives in [`trackstream_benches::e2e`]; this binary only reads
//! the command line and runs it. `--help` lists the flags.

use trackstream_benches::e2e;

fn main() -> anyhow::Result<()> {
    let opts = e2e::options()?;
    e2e::run_until_stopped(&opts)
}
