//! Command line (clap derive). Bad usage exits 2 with clap's message.
use clap::{Args, Parser, Subcommand};

use tcp_trace_common::{AF_INET, AF_INET6, Filter, MAX_PORTS};

#[derive(Debug, Parser)]
#[command(
    name = "tcp-trace",
    version,
    about = "Every TCP connection's handshake and teardown as the kernel lives them",
    long_about = "Traces TCP state transitions, SYN/SYN-ACK/data retransmissions, resets, and where connect() and accept() return, using eBPF tracepoints. Needs root, or CAP_BPF + CAP_PERFMON (+ CAP_DAC_READ_SEARCH for tracefs)."
)]
pub struct Cli {
    /// Diagnostics on stderr: -v info, -vv debug, -vvv trace (aya's own messages and
    /// the kernel side's log records). RUST_LOG (env_logger syntax, e.g.
    /// `aya=debug`) refines it.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(flatten)]
    pub trace: TraceArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write raw events to a file (versioned format) for `replay`.
    Record(RecordArgs),
    /// Render a recording; needs no privilege.
    Replay(ReplayArgs),
    /// Reproduce the claims of the handshake study note on this kernel, in network
    /// namespaces made for the purpose, with a verdict per claim from the captured trace.
    Lab(crate::lab::LabArgs),
}

#[derive(Debug, Clone, Args)]
pub struct RecordArgs {
    /// Output file.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: std::path::PathBuf,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    pub duration: Option<f64>,
    /// Stop after this many events.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
}

#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// A file written by `tcp-trace record`.
    pub file: std::path::PathBuf,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// What to show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum View {
    /// One line per event (transition, retransmit, reset, syscall return).
    Events,
    /// One line per finished connection, with phase durations.
    Conns,
    /// Per conversation, a client | server sequence diagram.
    Ladder,
}

#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// What to show [default: ladder; with --json: events, connections and summary].
    #[arg(long, value_enum)]
    pub view: Option<View>,
    /// JSON lines on stdout (every line has "type").
    #[arg(long)]
    pub json: bool,
    /// Print wall-clock time instead of seconds since start.
    #[arg(short = 'T', long = "timestamp")]
    pub timestamp: bool,
    /// Most sockets tracked at once; beyond it the least recently active is
    /// reported early (counted as evicted).
    #[arg(long, value_name = "N", default_value_t = 65536, value_parser = clap::value_parser!(u64).range(16..=16_777_216))]
    pub max_sockets: u64,
}

#[derive(Debug, Clone, Args)]
pub struct FilterArgs {
    /// Only sockets owned by this process (tgid); applied in the kernel.
    #[arg(short = 'p', long = "pid", value_parser = clap::value_parser!(u32).range(1..))]
    pub pid: Option<u32>,
    /// Only connections with this port at either end (repeatable, up to 16).
    #[arg(short = 'P', long = "port", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Vec<u16>,
    /// IPv4 only.
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    pub ipv4: bool,
    /// IPv6 only.
    #[arg(short = '6', long = "ipv6")]
    pub ipv6: bool,
    /// Only sockets of processes in tcp-trace's own pid namespace (its container).
    #[arg(long)]
    pub this_container: bool,
    /// Only sockets of processes in this cgroup v2 directory (absolute, or relative
    /// to the cgroup2 mount); applied in the kernel by cgroup id. Repeatable.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Vec<std::path::PathBuf>,
    /// Only sockets of this container (id prefix, as `podman ps` prints it);
    /// applied in the kernel by cgroup id. Repeatable.
    #[arg(long, value_name = "ID")]
    pub container: Vec<String>,
    /// How to attach the kernel hooks.
    #[arg(long, value_enum, default_value_t = crate::loader::AttachMode::Auto)]
    pub attach: crate::loader::AttachMode,
    /// Ring buffer size in KiB (a power of two, at least 4): events that do not fit
    /// are counted and reported as lost.
    #[arg(long, value_name = "KIB", default_value_t = 8192, value_parser = parse_ring_kib)]
    pub ring_kib: u32,
}

fn parse_ring_kib(s: &str) -> Result<u32, String> {
    let v: u32 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a size in KiB"))?;
    if !(4..=1 << 20).contains(&v) || !v.is_power_of_two() {
        return Err(format!(
            "ring size must be a power of two between 4 and 1048576 KiB, got {s}"
        ));
    }
    Ok(v)
}

#[derive(Debug, Clone, Args)]
pub struct TraceArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    pub duration: Option<f64>,
    /// Stop after this many events.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
}

fn parse_duration(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!(
            "duration must be a positive number of seconds, got `{s}`"
        ));
    }
    if v > 1e9 {
        return Err(format!("duration `{s}` is too large"));
    }
    Ok(v)
}

impl FilterArgs {
    /// The in-kernel filter, or a usage error.
    pub fn to_filter(&self) -> Result<Filter, String> {
        if self.port.len() > MAX_PORTS {
            return Err(format!(
                "at most {MAX_PORTS} --port values are supported, got {}",
                self.port.len()
            ));
        }
        let mut f = Filter {
            tgid: self.pid.unwrap_or(0),
            nports: self.port.len() as u32,
            ..Filter::default()
        };
        for (i, p) in self.port.iter().enumerate() {
            f.ports[i] = *p;
        }
        f.this_container = u8::from(self.this_container);
        f.family = if self.ipv4 {
            AF_INET
        } else if self.ipv6 {
            AF_INET6
        } else {
            0
        };
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("tcp-trace").chain(args.iter().copied()))
    }

    #[test]
    fn defaults() {
        let c = parse(&[]).unwrap();
        assert!(!c.trace.output.json && c.trace.duration.is_none() && c.trace.count.is_none());
        assert_eq!(c.trace.filter.to_filter().unwrap(), Filter::default());
    }

    #[test]
    fn filters_map_to_kernel_filter() {
        let c = parse(&["-p", "42", "-P", "80", "--port", "443", "-6"]).unwrap();
        let f = c.trace.filter.to_filter().unwrap();
        assert_eq!(f.tgid, 42);
        assert_eq!(f.nports, 2);
        assert_eq!(&f.ports[..2], &[80, 443]);
        assert_eq!(f.family, AF_INET6);
        let c = parse(&["-4"]).unwrap();
        assert_eq!(c.trace.filter.to_filter().unwrap().family, AF_INET);
    }

    #[test]
    fn bad_values_rejected() {
        for args in [
            &["-p", "0"][..],
            &["-p", "abc"],
            &["-p", "-3"],
            &["-P", "0"],
            &["-P", "65536"],
            &["--port", "http"],
            &["--duration", "0"],
            &["--duration", "-1"],
            &["--duration", "nan"],
            &["--duration", "inf"],
            &["--duration", "soon"],
            &["--count", "0"],
            &["--ring-kib", "3"],
            &["--ring-kib", "100"],
            &["--ring-kib", "2"],
            &["--count", "-5"],
            &["--bogus"],
        ] {
            let e = parse(args).expect_err(&format!("{args:?} should fail"));
            assert_eq!(e.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn ipv4_and_ipv6_conflict() {
        let e = parse(&["-4", "-6"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ArgumentConflict);
    }

    #[test]
    fn too_many_ports() {
        let mut args = Vec::new();
        for p in 1..=17 {
            args.push("-P".to_string());
            args.push(p.to_string());
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let c = parse(&refs).unwrap();
        assert!(
            c.trace
                .filter
                .to_filter()
                .unwrap_err()
                .contains("at most 16")
        );
    }

    #[test]
    fn views_and_subcommands() {
        let c = parse(&["--view", "conns"]).unwrap();
        assert_eq!(c.trace.output.view, Some(View::Conns));
        assert_eq!(parse(&["--view", "tree"]).unwrap_err().exit_code(), 2);
        assert_eq!(parse(&["--max-sockets", "1"]).unwrap_err().exit_code(), 2);
        let c = parse(&["record", "-o", "/tmp/x.ttr", "-P", "80", "--duration", "2"]).unwrap();
        match c.command {
            Some(Command::Record(r)) => {
                assert_eq!(r.output, std::path::PathBuf::from("/tmp/x.ttr"));
                assert_eq!(r.filter.port, vec![80]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parse(&["record"]).unwrap_err().exit_code(), 2);
        let c = parse(&["replay", "f.ttr", "--view", "ladder", "--json"]).unwrap();
        match c.command {
            Some(Command::Replay(r)) => {
                assert_eq!(r.output.view, Some(View::Ladder));
                assert!(r.output.json);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parse(&["replay"]).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn duration_fraction() {
        let c = parse(&["--duration", "0.5", "--count", "3", "-T", "--json"]).unwrap();
        assert_eq!(c.trace.duration, Some(0.5));
        assert_eq!(c.trace.count, Some(3));
        assert!(c.trace.output.timestamp && c.trace.output.json);
    }
}
