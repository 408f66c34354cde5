//! `tcp-trace` (no subcommand): load, attach, stream until a stop condition.
use std::io::{self, BufWriter, Write};
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use crate::clock::{WallClock, monotonic_ns};
use crate::cli::TraceArgs;
use crate::decode::{self, Event};
use crate::loader::{self, Counters, Options};
use crate::render::{self, events::TimeColumn};
use crate::source::{POLL_INTERVAL, Source};

/// Where decoded events go.
pub trait Sink {
    fn event(&mut self, ev: &Event) -> io::Result<()>;
    fn lost(&mut self, count: u64, total: u64) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
    fn finish(&mut self, stats: &RunStats) -> io::Result<()>;
}

#[derive(Clone, Copy, Debug, Default)]
pub struct RunStats {
    pub events: u64,
    pub decode_errors: u64,
    pub counters: Counters,
}

/// Text stream: one aligned line per event.
pub struct TextSink<W: Write> {
    out: W,
    time: TimeColumn,
    header_done: bool,
}

impl<W: Write> TextSink<W> {
    pub fn new(out: W, time: TimeColumn) -> Self {
        TextSink {
            out,
            time,
            header_done: false,
        }
    }
}

impl<W: Write> Sink for TextSink<W> {
    fn event(&mut self, ev: &Event) -> io::Result<()> {
        if !self.header_done {
            render::events::header(&mut self.out, &self.time)?;
            self.header_done = true;
        }
        render::events::line(&mut self.out, ev, &self.time)
    }
    fn lost(&mut self, count: u64, _total: u64) -> io::Result<()> {
        eprintln!("tcp-trace: lost {count} events (ring buffer full)");
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
    fn finish(&mut self, s: &RunStats) -> io::Result<()> {
        self.out.flush()?;
        eprintln!("{}", summary_line(s));
        Ok(())
    }
}

pub fn summary_line(s: &RunStats) -> String {
    format!(
        "tcp-trace: {} events, {} lost, {} filtered in the kernel, {} undecodable, {} accept/connect returns without socket",
        s.events, s.counters.lost, s.counters.filtered, s.decode_errors, s.counters.fd_walk_failed
    )
}

/// JSON lines.
pub struct JsonSink<W: Write> {
    out: W,
    wall: Option<WallClock>,
}

impl<W: Write> JsonSink<W> {
    pub fn new(out: W, wall: Option<WallClock>) -> Self {
        JsonSink { out, wall }
    }
}

impl<W: Write> Sink for JsonSink<W> {
    fn event(&mut self, ev: &Event) -> io::Result<()> {
        render::json::event(&mut self.out, ev, self.wall.as_ref())
    }
    fn lost(&mut self, count: u64, total: u64) -> io::Result<()> {
        eprintln!("tcp-trace: lost {count} events (ring buffer full)");
        render::json::lost(&mut self.out, count, total)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
    fn finish(&mut self, s: &RunStats) -> io::Result<()> {
        writeln!(
            self.out,
            "{{\"type\":\"stats\",\"events\":{},\"lost\":{},\"filtered\":{},\"decode_errors\":{},\"fd_walk_failed\":{}}}",
            s.events, s.counters.lost, s.counters.filtered, s.decode_errors, s.counters.fd_walk_failed
        )?;
        self.out.flush()?;
        eprintln!("{}", summary_line(s));
        Ok(())
    }
}

/// A broken pipe (`| head`) ends the run quietly.
fn is_epipe(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::BrokenPipe
}

/// Runs the live tracer. Returns the process exit code.
pub async fn run(args: &TraceArgs, filter: tcp_trace_common::Filter) -> anyhow::Result<u8> {
    let t0 = monotonic_ns();
    let wall = WallClock::now();
    let (loaded, ring) = loader::load(&Options { filter })?;
    for w in &loaded.warnings {
        eprintln!("tcp-trace: warning: {w}");
    }
    let ready_ms = (monotonic_ns() - t0) as f64 / 1e6;
    eprintln!(
        "tcp-trace: {} hooks attached in {ready_ms:.0} ms; Ctrl-C to stop",
        loaded.attached.len()
    );
    let mut source = Source::new(ring)?;

    let stdout = BufWriter::with_capacity(64 * 1024, io::stdout().lock());
    let mut sink: Box<dyn Sink> = if args.json {
        Box::new(JsonSink::new(stdout, args.timestamp.then_some(wall)))
    } else {
        let time = if args.timestamp {
            TimeColumn::Wall(wall)
        } else {
            TimeColumn::Relative { t0_ns: t0 }
        };
        Box::new(TextSink::new(stdout, time))
    };

    let mut stats = RunStats::default();
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = args
        .duration
        .map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s));
    let sleep = tokio::time::sleep_until(deadline.unwrap_or_else(|| {
        tokio::time::Instant::now() + Duration::from_secs(86400 * 365 * 30)
    }));
    tokio::pin!(sleep);
    let mut last_lost = 0u64;
    let mut last_counter_check = tokio::time::Instant::now();

    let result: io::Result<()> = async {
        loop {
            let mut stop = false;
            tokio::select! {
                r = source.readable() => { r?; }
                _ = tick.tick() => {}
                _ = sigint.recv() => stop = true,
                _ = sigterm.recv() => stop = true,
                _ = &mut sleep => stop = true,
            }
            let done = drain(&mut source, sink.as_mut(), &mut stats, args.count)?;
            if stop || done || last_counter_check.elapsed() >= Duration::from_secs(1) {
                last_counter_check = tokio::time::Instant::now();
                let c = loaded.counters();
                if c.lost > last_lost {
                    sink.lost(c.lost - last_lost, c.lost)?;
                    last_lost = c.lost;
                }
            }
            sink.flush()?;
            if stop || done {
                return Ok(());
            }
        }
    }
    .await;
    match result {
        Ok(()) => {}
        Err(e) if is_epipe(&e) => return Ok(0),
        Err(e) => return Err(e.into()),
    }
    stats.counters = loaded.counters();
    if stats.counters.lost > last_lost {
        let _ = sink.lost(stats.counters.lost - last_lost, stats.counters.lost);
    }
    match sink.finish(&stats) {
        Err(e) if is_epipe(&e) => Ok(0),
        r => r.map(|()| 0).map_err(Into::into),
    }
}

/// Drains the ring into the sink. Returns true when `--count` is reached.
fn drain(
    source: &mut Source,
    sink: &mut dyn Sink,
    stats: &mut RunStats,
    count: Option<u64>,
) -> io::Result<bool> {
    let mut err = None;
    let limit = count.unwrap_or(u64::MAX);
    source.drain(|bytes| {
        if err.is_some() || stats.events >= limit {
            return;
        }
        match decode::decode(bytes) {
            Ok(ev) => {
                stats.events += 1;
                if let Err(e) = sink.event(&ev) {
                    err = Some(e);
                }
            }
            Err(_) => stats.decode_errors += 1,
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    Ok(stats.events >= limit)
}
