use std::process::ExitCode;

use clap::{CommandFactory, Parser, error::ErrorKind};
use tcp_trace::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
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
        Some(Command::Explain(e)) => {
            rt.block_on(tcp_trace::trace::explain(&e, filter_of(&e.filter)))
        }
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
