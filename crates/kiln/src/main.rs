//! The `kiln` binary: `kiln serve` wires the parts together; the other verbs are a thin client of
//! the REST API (see `cli`).
#![forbid(unsafe_code)]

mod cli;
mod datalock;
mod logging;
mod serve;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "kiln", version, about = "Run AWS Lambda functions unchanged on your own machine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the server: the AWS Lambda REST API on --addr.
    Serve(serve::ServeArgs),
    /// Measure cold and warm starts, throughput, burst and density against baselines.
    Bench(kiln_bench::BenchArgs),
    #[command(flatten)]
    Client(cli::ClientCommand),
}

fn main() -> std::process::ExitCode {
    let args = Cli::parse();
    let result = match args.command {
        Command::Serve(a) => serve::run(a),
        Command::Bench(a) => kiln_bench::run(a),
        Command::Client(c) => cli::run(c),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // One sentence per cause, no debug dump.
            let mut msg = format!("kiln: {e}");
            for cause in e.chain().skip(1) {
                msg.push_str(&format!(": {cause}"));
            }
            eprintln!("{msg}");
            std::process::ExitCode::FAILURE
        }
    }
}
