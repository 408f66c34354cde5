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
    let no_select = tcp_trace::cli::SelectArgs::default();
    let filter_of = |f: &tcp_trace::cli::FilterArgs, s: &tcp_trace::cli::SelectArgs| match f
        .to_filter_with(s)
    {
        Ok(f) => f,
        Err(msg) => Cli::command().error(ErrorKind::TooManyValues, msg).exit(),
    };
    let check_select = |s: &tcp_trace::cli::SelectArgs, o: &tcp_trace::cli::OutputArgs| {
        use tcp_trace::cli::View;
        if (s.failed || s.min_ms.is_some()) && matches!(o.view, Some(View::Events | View::All)) {
            Cli::command()
                .error(
                    ErrorKind::ArgumentConflict,
                    "--failed and --min-ms select whole connections; use them with --view conns or --view ladder (or --json without --view), not with a view that prints events",
                )
                .exit()
        }
        if o.view == Some(View::All) && !o.json {
            Cli::command()
                .error(
                    ErrorKind::ArgumentConflict,
                    "--view all prints JSON lines (events, connections and summary): add --json, or use --view events or --view ladder for text",
                )
                .exit()
        }
    };
    match &cli.command {
        Some(c @ (Command::Completions { .. } | Command::Man)) => {
            let mut text = Vec::new();
            match c {
                Command::Completions { shell } => tcp_trace::cli::completions(*shell, &mut text),
                _ => tcp_trace::cli::man(&mut text).expect("writing to memory"),
            }
            return match std::io::Write::write_all(&mut std::io::stdout(), &text) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    eprintln!("tcp-trace: {e}");
                    ExitCode::from(1)
                }
                _ => ExitCode::SUCCESS,
            };
        }
        None => check_select(&cli.trace.select, &cli.trace.output),
        Some(Command::Replay(r)) => check_select(&r.select, &r.output),
        _ => {}
    }
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
            filter_of(&cli.trace.filter, &cli.trace.select),
        )),
        Some(Command::Record(r)) => rt.block_on(tcp_trace::trace::record(
            &r,
            filter_of(&r.filter, &no_select),
        )),
        Some(Command::Replay(r)) => tcp_trace::trace::replay(&r),
        Some(Command::Explain(e)) => rt.block_on(tcp_trace::trace::explain(
            &e,
            filter_of(&e.filter, &no_select),
        )),
        Some(Command::Lab(l)) => tcp_trace::lab::run(&l),
        Some(Command::Completions { .. } | Command::Man) => Ok(0),
    };
    match res {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("tcp-trace: {e:#}");
            ExitCode::from(1)
        }
    }
}
