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
    /// One line per slow or failed connection naming the cause (lost SYN, lost
    /// SYN-ACK or third ACK, full accept queue, late accept(), refused, timed out,
    /// reset, slow close), plus CLOSE_WAIT leaks and TIME_WAIT pressure.
    Explain(ExplainArgs),
    /// Reproduce the claims of the handshake study note on this kernel, in network
    /// namespaces made for the purpose, with a verdict per claim from the captured trace.
    Lab(crate::lab::LabArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(hide = true)]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout.
    #[command(hide = true)]
    Man,
}

/// The completion script for `shell`, generated from the CLI definition.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(shell, &mut cmd, "tcp-trace", out);
}

/// The man page tcp-trace(1) as roff, generated from the CLI definition (with the
/// subcommands' options in sections of their own).
pub fn man(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let cmd = <Cli as clap::CommandFactory>::command();
    let m = clap_mangen::Man::new(cmd.clone());
    m.render_title(out)?;
    m.render_name_section(out)?;
    m.render_synopsis_section(out)?;
    m.render_description_section(out)?;
    m.render_options_section(out)?;
    m.render_subcommands_section(out)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("tcp-trace {}", sub.get_name());
        let sub = sub.clone().bin_name(name.clone());
        let sm = clap_mangen::Man::new(sub);
        let mut roff = Vec::new();
        sm.render_options_section(&mut roff)?;
        let roff = String::from_utf8_lossy(&roff).replacen(
            ".SH OPTIONS",
            &format!(".SH \"OPTIONS OF {}\"", name.to_uppercase()),
            1,
        );
        out.write_all(roff.as_bytes())?;
    }
    m.render_extra_section(out)?;
    m.render_version_section(out)?;
    m.render_authors_section(out)
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
    #[command(flatten)]
    pub select: SelectArgs,
    #[command(flatten)]
    pub style: StyleArgs,
    /// Instead of the view: one line per slow or failed connection naming the cause
    /// (as `tcp-trace explain`).
    #[arg(long)]
    pub explain: bool,
    #[command(flatten)]
    pub explain_opts: ExplainOpts,
}

/// Thresholds of `explain` / `replay --explain`.
#[derive(Debug, Clone, Args)]
pub struct ExplainOpts {
    /// A phase (handshake, connect, accept wait, close) at least this long is slow.
    #[arg(long, value_name = "MS", default_value_t = 200.0, value_parser = parse_ms)]
    pub slow: f64,
    /// CLOSE_WAIT sockets at least this old are reported as a leak, per process and
    /// remote end.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = parse_ms)]
    pub close_wait_secs: f64,
    /// Report TIME_WAIT sockets towards one remote end from this many on.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub time_wait_min: u32,
}

impl ExplainOpts {
    pub fn config(&self) -> crate::explain::Config {
        crate::explain::Config {
            slow_ns: (self.slow * 1e6) as u64,
            close_wait_ns: (self.close_wait_secs * 1e9) as u64,
            time_wait_min: self.time_wait_min,
        }
    }
}

fn parse_ms(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if !(v.is_finite() && (0.0..=1e9).contains(&v)) {
        return Err(format!("`{s}` must be a number between 0 and 1e9"));
    }
    Ok(v)
}

#[derive(Debug, Clone, Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub opts: ExplainOpts,
    /// JSON lines on stdout (`{"type":"diagnosis",...}`, then `stats`).
    #[arg(long)]
    pub json: bool,
    /// Most sockets tracked at once.
    #[arg(long, value_name = "N", default_value_t = 65536, value_parser = clap::value_parser!(u64).range(16..=16_777_216))]
    pub max_sockets: u64,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    pub duration: Option<f64>,
    /// Stop after this many events.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
}

impl ExplainArgs {
    /// The output settings the renderer takes.
    pub fn output(&self) -> OutputArgs {
        OutputArgs {
            view: Some(View::Conns),
            json: self.json,
            timestamp: false,
            max_sockets: self.max_sockets,
        }
    }
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
    /// Nothing per event or connection (headless, e.g. with --metrics): the summary
    /// still goes to stderr at exit; with --json only the lost, skipped, summary and
    /// stats lines are printed.
    None,
    /// With --json: every event line and every connection line, then the summary
    /// (what --json printed by default before JSON schema 2).
    All,
}

/// Optional labels of the per-connection metrics (`--metrics-labels`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MetricsLabel {
    /// The remote IP address (no port): one series per peer address.
    Remote,
    /// The owner's command name.
    Comm,
}

#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// What to show [default: ladder; with --json: connections and summary (events too with --view all)].
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
    /// Only connections with this port at either end; applied in the kernel.
    /// Comma-separated and/or repeated (`-P 80,443 -P 8080`), up to 16 ports in all
    /// (with -L and -D).
    #[arg(short = 'P', long = "port", value_name = "PORT[,PORT...]", value_delimiter = ',', value_parser = parse_port)]
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
    /// One kernel record per event even where the state hook could keep a book per
    /// connection (tp_btf and raw attach); `--view events`, `record` and the classic
    /// tracepoint attach always use it.
    #[arg(long)]
    pub per_event: bool,
    /// Ring buffer size in KiB (a power of two, at least 4): events that do not fit
    /// are counted and reported as lost.
    #[arg(long, value_name = "KIB", default_value_t = 8192, value_parser = parse_ring_kib)]
    pub ring_kib: u32,
    /// When the reader falls behind the kernel (a quarter of the ring read without a
    /// pause, or an event lost), lower its nice value to this, once, and say so: under a
    /// storm that keeps every CPU busy the scheduler's fair share is what starves
    /// the reader. 0 leaves the priority alone. Needs CAP_SYS_NICE (a refusal is
    /// reported and tracing goes on).
    #[arg(long, value_name = "NICE", default_value_t = -5, allow_negative_numbers = true, value_parser = clap::value_parser!(i32).range(-20..=0))]
    pub renice: i32,
    /// Most sockets the kernel side keeps a book for at once (one record per
    /// connection); sockets beyond it are reported event by event, counted as
    /// `books_full` (nothing is lost). About 250 bytes each, allocated at start.
    #[arg(long, value_name = "N", default_value_t = 16384, value_parser = clap::value_parser!(u32).range(1..=4_194_304))]
    pub book_entries: u32,
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
    #[command(flatten)]
    pub select: SelectArgs,
    #[command(flatten)]
    pub style: StyleArgs,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    pub duration: Option<f64>,
    /// Stop after this many events.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Serve OpenMetrics (Prometheus) text at http://ADDR/metrics while tracing,
    /// e.g. 127.0.0.1:9464 (docs/metrics.md).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Extra labels on the per-connection metrics, comma separated (each multiplies
    /// the number of series).
    #[arg(
        long,
        value_name = "LABELS",
        value_enum,
        value_delimiter = ',',
        requires = "metrics"
    )]
    pub metrics_labels: Vec<MetricsLabel>,
}

/// bcc-style selections applied in userspace, to connections once correlated (and,
/// for -L/-D/--netns, to each line of `--view events`). Live, the ports of -L/-D
/// also go to the kernel's either-end port filter, which lets a superset through.
#[derive(Debug, Clone, Default, Args)]
pub struct SelectArgs {
    /// Only connections whose local port is one of these (a server's or listener's
    /// port; a client's local port is ephemeral). Comma-separated and/or repeated.
    #[arg(short = 'L', long = "localport", value_name = "PORT[,PORT...]", value_delimiter = ',', value_parser = parse_port)]
    pub localport: Vec<u16>,
    /// Only connections whose remote port is one of these (a client's destination
    /// port). Comma-separated and/or repeated.
    #[arg(short = 'D', long = "remoteport", value_name = "PORT[,PORT...]", value_delimiter = ',', value_parser = parse_port)]
    pub remoteport: Vec<u16>,
    /// Only sockets in the network namespace with this inode
    /// (`stat -L -c %i /proc/PID/ns/net`, `lsns -t net`).
    #[arg(long, value_name = "INODE", value_parser = parse_netns)]
    pub netns: Option<u32>,
    /// Only connections that failed: refused, timed out, or reset.
    #[arg(long)]
    pub failed: bool,
    /// Only connections whose handshake or connect() latency is at least MS
    /// milliseconds (as tcpconnlat); connections without either are left out.
    #[arg(long = "min-ms", value_name = "MS", value_parser = parse_min_ms)]
    pub min_ms: Option<f64>,
    /// Only connections of this Kubernetes pod: its name or its UID (the UID comes from
    /// the cgroup path, the name from --pods-log-dir). docs/kubernetes.md.
    #[arg(long, value_name = "NAME_OR_UID", value_parser = parse_pod)]
    pub pod: Option<String>,
    /// Only connections of pods in this Kubernetes namespace (read from --pods-log-dir).
    #[arg(long, value_name = "NS", value_parser = parse_namespace)]
    pub namespace: Option<String>,
    /// The kubelet's pod log directory, whose `<namespace>_<name>_<uid>` entries name
    /// the pods (mounted read-only in a DaemonSet); absent: pods have only their UID.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PODS_LOG_DIR)]
    pub pods_log_dir: std::path::PathBuf,
}

/// Where the kubelet keeps one directory per pod, `<namespace>_<name>_<uid>`.
pub const DEFAULT_PODS_LOG_DIR: &str = "/var/log/pods";

/// A DNS-1123 label (a namespace): 1-63 of `a-z0-9-`, alphanumeric at both ends.
fn is_dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// `--pod`: a pod name (a DNS-1123 subdomain: dot-separated labels, at most 253) or a
/// pod UID (any case; compared lower case).
fn parse_pod(s: &str) -> Result<String, String> {
    if crate::container::is_pod_uid(s) {
        return Ok(s.to_ascii_lowercase());
    }
    if s.len() <= 253 && s.split('.').all(is_dns_label) {
        return Ok(s.to_owned());
    }
    Err(format!(
        "`{s}` is neither a pod name (lower-case letters, digits, '-' and '.', at most 253, \
         e.g. web-7d4b9c8f6-x2x9z) nor a pod UID (e.g. 5e9b7c1d-3f2a-4b8e-9c0d-1a2b3c4d5e6f)"
    ))
}

/// `--namespace`: a DNS-1123 label.
fn parse_namespace(s: &str) -> Result<String, String> {
    if is_dns_label(s) {
        return Ok(s.to_owned());
    }
    Err(format!(
        "`{s}` is not a Kubernetes namespace (1-63 lower-case letters, digits and '-', \
         starting and ending with a letter or digit)"
    ))
}

/// When to colour the text views.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorWhen {
    /// When stdout is a terminal and NO_COLOR is unset or empty.
    #[default]
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Default, Args)]
pub struct StyleArgs {
    /// Colour the ladder and events views (auto: only on a terminal, never when
    /// NO_COLOR is set).
    #[arg(long = "color", alias = "colour", value_enum, value_name = "WHEN", default_value_t = ColorWhen::Auto)]
    pub color: ColorWhen,
    /// Also write the sequence diagrams of the conversations as an SVG picture to FILE
    /// (written at the end of the run).
    #[arg(long, value_name = "FILE")]
    pub svg: Option<std::path::PathBuf>,
}

impl StyleArgs {
    /// Whether to colour, given whether stdout is a terminal and `NO_COLOR`.
    pub fn colour(&self, is_tty: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
        match self.color {
            ColorWhen::Always => true,
            ColorWhen::Never => false,
            ColorWhen::Auto => is_tty && no_color.is_none_or(|v| v.is_empty()),
        }
    }
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(0) => Err("port 0 is not a port to filter on (1..=65535)".into()),
        Ok(p) => Ok(p),
        Err(_) => Err(format!("`{s}` is not a port number (1..=65535)")),
    }
}

fn parse_netns(s: &str) -> Result<u32, String> {
    let v: u64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a network-namespace inode number (e.g. 4026531840)"))?;
    if v == 0 || v > u64::from(u32::MAX) {
        return Err(format!(
            "network-namespace inode must be between 1 and {}, got {s}",
            u32::MAX
        ));
    }
    Ok(v as u32)
}

fn parse_min_ms(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of milliseconds"))?;
    if !(v.is_finite() && (0.0..=1e9).contains(&v)) {
        return Err(format!(
            "--min-ms must be a number of milliseconds between 0 and 1e9, got `{s}`"
        ));
    }
    Ok(v)
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
        self.to_filter_with(&SelectArgs::default())
    }

    /// The in-kernel filter with the ports of -L/-D added to the either-end port
    /// list (a superset, refined in userspace), or a usage error.
    pub fn to_filter_with(&self, select: &SelectArgs) -> Result<Filter, String> {
        let mut ports: Vec<u16> = self.port.clone();
        if !self.port.is_empty() || !select.localport.is_empty() || !select.remoteport.is_empty() {
            ports.extend(select.localport.iter().chain(&select.remoteport));
        }
        ports.sort_unstable();
        ports.dedup();
        if ports.len() > MAX_PORTS {
            return Err(format!(
                "at most {MAX_PORTS} distinct ports in -P/--port, -L/--localport and -D/--remoteport together are supported, got {}",
                ports.len()
            ));
        }
        let mut f = Filter {
            tgid: self.pid.unwrap_or(0),
            nports: ports.len() as u32,
            ..Filter::default()
        };
        for (i, p) in ports.iter().enumerate() {
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
        let c = parse(&["replay", "f.ttr", "--explain", "--slow", "50"]).unwrap();
        match c.command {
            Some(Command::Replay(r)) => {
                assert!(r.explain);
                assert_eq!(r.explain_opts.config().slow_ns, 50_000_000);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn explain_args() {
        let c = parse(&["explain", "-P", "80", "--json", "--close-wait-secs", "2"]).unwrap();
        match c.command {
            Some(Command::Explain(e)) => {
                assert_eq!(e.filter.port, vec![80]);
                assert!(e.json);
                let cfg = e.opts.config();
                assert_eq!(cfg.slow_ns, 200_000_000);
                assert_eq!(cfg.close_wait_ns, 2_000_000_000);
                assert_eq!(cfg.time_wait_min, 100);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse(&["explain", "--slow", "-1"]).unwrap_err().exit_code(),
            2
        );
    }

    #[test]
    fn duration_fraction() {
        let c = parse(&["--duration", "0.5", "--count", "3", "-T", "--json"]).unwrap();
        assert_eq!(c.trace.duration, Some(0.5));
        assert_eq!(c.trace.count, Some(3));
        assert!(c.trace.output.timestamp && c.trace.output.json);
    }

    #[test]
    fn bcc_filters_and_lists() {
        let c = parse(&["-P", "80,443", "-P", "8080", "-L", "22", "-D", "53,5353"]).unwrap();
        assert_eq!(c.trace.filter.port, vec![80, 443, 8080]);
        assert_eq!(c.trace.select.localport, vec![22]);
        assert_eq!(c.trace.select.remoteport, vec![53, 5353]);
        // -L/-D reach the kernel's either-end filter as a superset.
        let f = c.trace.filter.to_filter_with(&c.trace.select).unwrap();
        assert_eq!(
            &f.ports[..f.nports as usize],
            &[22, 53, 80, 443, 5353, 8080]
        );
        let c = parse(&[
            "--localport",
            "8080",
            "--netns",
            "4026531840",
            "--failed",
            "--min-ms",
            "1.5",
        ])
        .unwrap();
        assert_eq!(c.trace.select.netns, Some(4026531840));
        assert!(c.trace.select.failed);
        assert_eq!(c.trace.select.min_ms, Some(1.5));
        let c = parse(&[
            "replay", "f.ttr", "-L", "80", "--failed", "--svg", "x.svg", "--color", "never",
        ])
        .unwrap();
        match c.command {
            Some(Command::Replay(r)) => {
                assert_eq!(r.select.localport, vec![80]);
                assert_eq!(r.style.svg, Some(std::path::PathBuf::from("x.svg")));
                assert_eq!(r.style.color, ColorWhen::Never);
            }
            other => panic!("{other:?}"),
        }
        for args in [
            &["-L", "0"][..],
            &["-D", "http"],
            &["-P", "80,"],
            &["-P", "80,,443"],
            &["--netns", "0"],
            &["--netns", "4294967296"],
            &["--netns", "net:[4026531840]"],
            &["--min-ms", "-1"],
            &["--min-ms", "fast"],
            &["--min-ms", "nan"],
            &["--color", "sometimes"],
        ] {
            let e = parse(args).expect_err(&format!("{args:?} should fail"));
            assert_eq!(e.exit_code(), 2, "{args:?}");
        }
        let many: Vec<String> = (1..=17).map(|p| p.to_string()).collect();
        let c = parse(&["-L", &many[..9].join(","), "-D", &many[9..].join(",")]).unwrap();
        assert!(
            c.trace
                .filter
                .to_filter_with(&c.trace.select)
                .unwrap_err()
                .contains("at most 16")
        );
    }

    #[test]
    fn colour_decision() {
        let s = |w| StyleArgs {
            color: w,
            svg: None,
        };
        let empty = std::ffi::OsStr::new("");
        let one = std::ffi::OsStr::new("1");
        assert!(s(ColorWhen::Auto).colour(true, None));
        assert!(s(ColorWhen::Auto).colour(true, Some(empty)));
        assert!(!s(ColorWhen::Auto).colour(true, Some(one)));
        assert!(!s(ColorWhen::Auto).colour(false, None));
        assert!(s(ColorWhen::Always).colour(false, Some(one)));
        assert!(!s(ColorWhen::Never).colour(true, None));
    }

    #[test]
    fn completions_and_man_page() {
        for (shell, marker) in [
            (clap_complete::Shell::Bash, "complete -F"),
            (clap_complete::Shell::Zsh, "#compdef tcp-trace"),
            (clap_complete::Shell::Fish, "complete -c tcp-trace"),
        ] {
            let mut out = Vec::new();
            completions(shell, &mut out);
            let text = String::from_utf8(out).unwrap();
            assert!(text.contains(marker), "{shell}");
            for word in [
                "record",
                "replay",
                "lab",
                "localport",
                "remoteport",
                "min-ms",
                "failed",
                "netns",
                "svg",
                "color",
                "view",
            ] {
                assert!(text.contains(word), "{shell} completion lacks {word}");
            }
        }
        let mut out = Vec::new();
        man(&mut out).unwrap();
        let roff = String::from_utf8(out).unwrap();
        for want in [
            ".TH tcp-trace 1",
            ".SH NAME",
            ".SH SYNOPSIS",
            ".SH OPTIONS",
            "\\-\\-localport",
            "\\-\\-min\\-ms",
            "\\-\\-svg",
            "OPTIONS OF TCP-TRACE RECORD",
            "\\-\\-output",
        ] {
            assert!(roff.contains(want), "man page lacks {want}");
        }
    }
}
