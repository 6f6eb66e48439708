//! `kiln bench`: measures kiln against the baselines of the same machine, in one run.

/// Options of `kiln bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: BenchArgs) -> anyhow::Result<std::process::ExitCode> {
    let _ = args.json;
    anyhow::bail!("the benchmark is not written yet")
}
