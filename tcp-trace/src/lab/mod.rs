//! `tcp-trace lab`: reproduces the claims of CLAIMS.md on the running kernel (ids
//! `C…`), plus lab checks of kernel behaviour that no claim states (ids `S…`).
//!
//! Each scenario builds two network namespaces joined by a veth pair, makes real
//! traffic between them with the kernel settings and nftables drops a claim needs,
//! captures it with the real tracer (loaded in this process, filtered to the
//! scenario's port), feeds the events to the correlator and prints the ladder and
//! one verdict per claim. Verdicts are pure functions of the capture
//! ([`verdict`]); see docs/lab.md.
pub mod capture;
pub mod env;
pub mod injected;
pub mod raw;
pub mod scenarios;
pub mod verdict;

#[cfg(test)]
mod tests;

use std::io::{self, Write};

use serde_json::json;

use crate::correlate::{Connection, conversations};
use crate::render::json;
use crate::render::ladder::{self, LadderOptions};
use capture::{Capture, Tracer, keep_lab_events};
use env::LabNet;
use scenarios::{SCENARIOS, Scenario};
use verdict::Verdict;

/// `tcp-trace lab` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct LabArgs {
    /// scenario name, `list` or `all`
    pub scenario: String,
    /// JSON lines: `{"type":"claim",…}` verdicts and `{"type":"connection",…}` records
    #[arg(long)]
    pub json: bool,
    /// Run over IPv6 instead of IPv4
    #[arg(short = '6', long)]
    pub ipv6: bool,
}

fn names() -> String {
    SCENARIOS
        .iter()
        .map(|s| s.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs `tcp-trace lab`; returns the exit code (0 every claim holds, 1 a claim failed
/// or a runtime error, 2 unknown scenario).
pub fn run(args: &LabArgs) -> anyhow::Result<u8> {
    let mut out = io::stdout().lock();
    let selected: Vec<&Scenario> = match args.scenario.as_str() {
        "list" => {
            for s in SCENARIOS {
                writeln!(out, "{:<18} {:<9} {}", s.name, s.claims.join(","), s.about)?;
            }
            return Ok(0);
        }
        "all" => SCENARIOS.iter().collect(),
        name => match SCENARIOS.iter().find(|s| s.name == name) {
            Some(s) => vec![s],
            None => {
                eprintln!(
                    "tcp-trace lab: unknown scenario `{name}`; scenarios: {}, or `list`, `all`",
                    names()
                );
                return Ok(2);
            }
        },
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "tcp-trace lab: needs root (it creates network namespaces, sets nftables rules and loads eBPF programs)"
        );
        return Ok(1);
    }
    env::install_signal_cleanup();
    let mut all_hold = true;
    for s in selected {
        match run_one(s, args.ipv6) {
            Ok((cap, verdicts)) => {
                report(&mut out, s, args, &cap, &verdicts)?;
                all_hold &= verdicts.iter().all(|v| v.holds);
            }
            Err(e) => {
                all_hold = false;
                if args.json {
                    writeln!(
                        out,
                        "{}",
                        json!({"type": "error", "scenario": s.name, "error": format!("{e:#}")})
                    )?;
                }
                eprintln!("tcp-trace lab: {}: {e:#}", s.name);
            }
        }
        out.flush()?;
    }
    Ok(if all_hold { 0 } else { 1 })
}

/// Runs one scenario: network, tracer, traffic, capture, verdicts.
pub fn run_one(s: &Scenario, ipv6: bool) -> anyhow::Result<(Capture, Vec<Verdict>)> {
    let net = LabNet::new(ipv6)?;
    let tracer = Tracer::start(s.port, s.attach)?;
    let mut extra = Capture::default();
    (s.drive)(&net, s.port, &mut extra)?;
    let (events, lost, skipped) = tracer.stop()?;
    let events = keep_lab_events(events, &[net.client_addr, net.server_addr]);
    drop(net);
    let mut cap = Capture::from_events(events);
    cap.lost = lost;
    cap.time_wait = extra.time_wait;
    cap.sysctls = extra.sysctls;
    cap.marks = extra.marks;
    let verdicts = s
        .verdicts
        .iter()
        .map(|f| with_loss(f(&cap), lost, skipped))
        .collect();
    Ok((cap, verdicts))
}

/// Lost events make any verdict unreliable: it then fails, saying so. Hook runs the
/// kernel skipped are recorded with the evidence; they may have been any socket's
/// on the host (the lab's own then miss an event, which the verdicts check).
fn with_loss(mut v: Verdict, lost: u64, skipped: u64) -> Verdict {
    if let Some(o) = v.evidence.as_object_mut() {
        o.insert("lost_events".into(), json!(lost));
        o.insert("skipped_runs".into(), json!(skipped));
    } else {
        v.evidence =
            json!({ "evidence": v.evidence, "lost_events": lost, "skipped_runs": skipped });
    }
    if lost > 0 {
        v.holds = false;
        v.text = format!("{lost} events were lost (ring buffer full); {}", v.text);
    }
    v
}

/// `{"type":"claim",…}`, fields in this order.
#[derive(serde::Serialize)]
struct ClaimLine<'a> {
    #[serde(rename = "type")]
    record_type: &'static str,
    id: &'static str,
    holds: bool,
    evidence: &'a serde_json::Value,
    text: &'a str,
    scenario: &'static str,
    family: &'static str,
}

fn report(
    out: &mut impl Write,
    s: &Scenario,
    args: &LabArgs,
    cap: &Capture,
    verdicts: &[Verdict],
) -> io::Result<()> {
    let family = if args.ipv6 { "IPv6" } else { "IPv4" };
    if args.json {
        for c in &cap.connections {
            json::connection(&mut *out, c, None)?;
        }
        for v in verdicts {
            let line = ClaimLine {
                record_type: "claim",
                id: v.id,
                holds: v.holds,
                evidence: &v.evidence,
                text: &v.text,
                scenario: s.name,
                family,
            };
            serde_json::to_writer(&mut *out, &line)?;
            writeln!(out)?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "=== {} ({}), {family}: {}",
        s.name,
        s.claims.join(", "),
        s.about
    )?;
    let conns: Vec<Connection> = cap.connections.clone();
    for conv in conversations(conns) {
        ladder::render(out, &conv, &LadderOptions::default())?;
        writeln!(out)?;
    }
    for v in verdicts {
        let word = if v.holds { "holds" } else { "FAILS" };
        writeln!(out, "{} {word}: {}", v.id, v.text)?;
    }
    writeln!(out)
}
