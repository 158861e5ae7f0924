//! `trackstream-scale`: per-stage scaling runs (`benches/scale.sh` runs it).
//!
//! The benchmark lives in [`trackstream_benches::scale`]; this binary only
//! reads the command line and runs it. `--help` lists the flags.

use trackstream_benches::scale;

fn main() -> anyhow::Result<()> {
    let opts = scale::options()?;
    scale::run_until_stopped(&opts)
}
