use std::process::ExitCode;

use clap::{CommandFactory, Parser, error::ErrorKind};
use tcp_trace::cli::{Cli, Command};

/// The `log` backend for aya's own messages and the kernel side's aya-log records:
/// off unless `-v` or RUST_LOG asks (the default output stays as it is).
fn init_log(verbose: u8) {
    let level = match verbose {
        0 => log::LevelFilter::Off,
        1 => log::LevelFilter::Info,
        2 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    let mut b = env_logger::Builder::new();
    b.filter_level(level);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        b.parse_filters(&spec);
    }
    b.init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_log(cli.verbose);
    let filter_of = |f: &tcp_trace::cli::FilterArgs| match f.to_filter() {
        Ok(f) => f,
        Err(msg) => Cli::command().error(ErrorKind::TooManyValues, msg).exit(),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tcp-trace: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let res = match cli.command {
        None => rt.block_on(tcp_trace::trace::run(
            &cli.trace,
            filter_of(&cli.trace.filter),
        )),
        Some(Command::Record(r)) => rt.block_on(tcp_trace::trace::record(&r, filter_of(&r.filter))),
        Some(Command::Replay(r)) => tcp_trace::trace::replay(&r),
        Some(Command::Lab(l)) => tcp_trace::lab::run(&l),
    };
    match res {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("tcp-trace: {e:#}");
            ExitCode::from(1)
        }
    }
}
