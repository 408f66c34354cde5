//! The CLI as users meet it, through the built binary and real recordings: bcc-style
//! filters on replay, colour only when asked (never into a pipe), `"time"` on every
//! JSON line, the hidden `completions` / `man` subcommands, exit code 2 on bad values.
mod common;

use std::process::{Command, Output};

use common::{LOOPBACK_V4, REFUSED_V6, TRACER, fresh_dir, recording, replay};
use serde_json::Value;

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(TRACER);
    c.args(args).env_remove("NO_COLOR");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// The stdout of a successful `tcp-trace replay REC ARGS…`.
fn replayed(rec: &str, args: &[&str]) -> String {
    replay(rec, args).ok().stdout
}

fn roles(conns_view: &str) -> Vec<String> {
    conns_view
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().nth(3).unwrap().to_string())
        .collect()
}

#[test]
fn local_and_remote_port_filters() {
    let all = replayed(LOOPBACK_V4, &["--view", "conns"]);
    assert_eq!(roles(&all), ["listener", "client", "server"]);
    // The server's port is local to the listener and the server side only.
    let l = replayed(LOOPBACK_V4, &["--view", "conns", "-L", "8123"]);
    assert_eq!(roles(&l), ["listener", "server"]);
    // ... and remote to the client.
    let d = replayed(LOOPBACK_V4, &["--view", "conns", "-D", "80,8123"]);
    assert_eq!(roles(&d), ["client"]);
    let none = replayed(LOOPBACK_V4, &["--view", "conns", "-L", "80,443"]);
    assert!(roles(&none).is_empty(), "{none}");
    // The ladder keeps a conversation when either end is selected: both lanes.
    let ladder = replayed(LOOPBACK_V4, &["-D", "8123"]);
    assert!(ladder.contains("client 127.0.0.1:33320"), "{ladder}");
    assert!(ladder.contains("server 127.0.0.1:8123"), "{ladder}");
    // --view events: per event, on its own local/remote ports.
    let ev = replayed(LOOPBACK_V4, &["--view", "events", "-L", "8123"]);
    for line in ev.lines().skip(1) {
        let local = line.split_whitespace().nth(3).unwrap();
        assert!(local.ends_with(":8123"), "{line}");
    }
}

#[test]
fn failed_min_ms_and_netns() {
    let ok = replayed(LOOPBACK_V4, &["--view", "conns", "--failed"]);
    assert!(roles(&ok).is_empty(), "{ok}");
    let refused = replayed(REFUSED_V6, &["--view", "conns", "--failed"]);
    assert_eq!(roles(&refused), ["client"]);
    assert!(refused.contains("refused"));
    // Handshakes of 0.008 and 0.062 ms, connect() latency 0.093 ms.
    let slow = replayed(LOOPBACK_V4, &["--view", "conns", "--min-ms", "0.05"]);
    assert_eq!(roles(&slow), ["client"]);
    let none = replayed(LOOPBACK_V4, &["--view", "conns", "--min-ms", "1"]);
    assert!(roles(&none).is_empty(), "{none}");
    let json = replayed(LOOPBACK_V4, &["--json", "--min-ms", "0.05"]);
    let lines: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.iter().all(|v| v["type"] != "event"), "no event lines");
    assert_eq!(
        lines.iter().filter(|v| v["type"] == "connection").count(),
        1
    );
    // These recordings predate the namespace field: with --netns nothing is
    // selected (the selection itself is unit-tested in pipeline.rs).
    assert!(lines.iter().all(|v| v["netns"].is_null()));
    let other = replayed(LOOPBACK_V4, &["--view", "conns", "--netns", "12345"]);
    assert!(roles(&other).is_empty(), "{other}");
}

#[test]
fn bad_values_exit_2_with_a_message() {
    for (args, says) in [
        (&["-L", "0"][..], "port 0"),
        (&["-D", "x"], "not a port number"),
        (&["-P", "80,http"], "not a port number"),
        (&["--netns=-1"], "not a network-namespace inode"),
        (&["--netns", "99999999999"], "between 1 and"),
        (&["--min-ms", "soon"], "milliseconds"),
        (&["--color", "pink"], "--color"),
        (
            &["--view", "events", "--failed"],
            "select whole connections",
        ),
        (
            &["replay", "x.ttr", "--view", "events", "--min-ms", "3"],
            "select whole connections",
        ),
    ] {
        let o = run(args, &[]);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn colour_only_when_asked() {
    // stdout is a pipe here: auto means none.
    let plain = replayed(LOOPBACK_V4, &[]);
    assert!(!plain.contains('\x1b'), "{plain}");
    let forced = replayed(LOOPBACK_V4, &["--color", "always"]);
    assert!(forced.contains("\x1b[36m-- SYN -"), "{forced}");
    assert!(forced.contains("\x1b[1mconnect() = 0\x1b[0m"), "{forced}");
    assert!(forced.contains("\x1b[1maccept4() = 5\x1b[0m"), "{forced}");
    // Exactly the plain text once the codes are removed.
    let mut stripped = String::new();
    let mut it = forced.chars();
    while let Some(c) = it.next() {
        if c == '\x1b' {
            it.by_ref().find(|&c| c == 'm');
        } else {
            stripped.push(c);
        }
    }
    assert_eq!(stripped, plain);
    let never = replayed(LOOPBACK_V4, &["--color", "never"]);
    assert_eq!(never, plain);
    let ev = replayed(REFUSED_V6, &["--view", "events", "--color", "always"]);
    assert!(ev.contains("\x1b[31mRST received\x1b[0m"), "{ev}");
    assert!(
        ev.contains("\x1b[1;31mconnect() = -ECONNREFUSED\x1b[0m"),
        "{ev}"
    );
    // NO_COLOR only affects auto (and stdout is no terminal anyway).
    let rec = recording(LOOPBACK_V4);
    let o = run(&["replay", rec.to_str().unwrap()], &[("NO_COLOR", "1")]);
    assert!(!String::from_utf8_lossy(&o.stdout).contains('\x1b'));
}

/// RFC 3339 UTC with nanoseconds.
fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 30
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && b[29] == b'Z'
        && b.iter()
            .enumerate()
            .all(|(i, c)| [4, 7, 10, 13, 16, 19, 29].contains(&i) || c.is_ascii_digit())
}

fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn count_of(lines: &[Value], ty: &str) -> usize {
    lines.iter().filter(|v| v["type"] == ty).count()
}

/// JSON schema 2: `--json` alone prints connections and the summary; events come
/// with `--view events` or `--view all`; the version is in the stats line.
#[test]
fn json_default_is_connections_and_view_all_adds_events() {
    let default = json_lines(&replayed(LOOPBACK_V4, &["--json"]));
    assert_eq!(count_of(&default, "event"), 0, "{default:?}");
    assert_eq!(count_of(&default, "connection"), 3);
    assert_eq!(count_of(&default, "summary"), 1);
    let stats = default.last().unwrap();
    assert_eq!(stats["type"], "stats");
    assert_eq!(stats["schema"], 2);
    assert_eq!(stats["events"], 14);

    let all = json_lines(&replayed(LOOPBACK_V4, &["--json", "--view", "all"]));
    // Every event the recording holds, then the same connections.
    assert_eq!(count_of(&all, "event"), 14);
    let conns = |v: &[Value]| -> Vec<Value> {
        v.iter()
            .filter(|l| l["type"] == "connection")
            .cloned()
            .collect()
    };
    assert_eq!(conns(&all), conns(&default));
    assert_eq!(count_of(&all, "summary"), 1);
    assert_eq!(all.last().unwrap()["schema"], 2);

    let events = json_lines(&replayed(LOOPBACK_V4, &["--json", "--view", "events"]));
    assert_eq!(count_of(&events, "event"), 14);
    assert_eq!(count_of(&events, "connection"), 0);
}

#[test]
fn view_all_needs_json_and_whole_connection_selections_refuse_it() {
    let rec = recording(LOOPBACK_V4);
    let rec = rec.to_str().unwrap();
    for args in [
        &["replay", rec, "--view", "all"][..],
        &["--view", "all", "--duration", "0.1"],
    ] {
        let out = run(args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--view all prints JSON lines"), "{err}");
        assert!(out.stdout.is_empty());
    }
    let out = run(&["replay", rec, "--json", "--view", "all", "--failed"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--failed and --min-ms"));
}

#[test]
fn every_json_line_has_a_wall_clock_time() {
    for args in [
        &["--json"][..],
        &["--json", "--view", "all"],
        &["--json", "--view", "events"],
        &["--json", "--view", "conns"],
        &["--json", "-T"],
    ] {
        let out = replayed(LOOPBACK_V4, args);
        let mut types = std::collections::BTreeSet::new();
        let mut last = String::new();
        for l in out.lines() {
            let v: Value = serde_json::from_str(l).unwrap();
            let t = v["time"].as_str().unwrap_or_else(|| panic!("no time: {l}"));
            assert!(is_rfc3339(t), "{t}");
            assert!(t.starts_with("2026-11-25T12:30:0"), "{t}");
            if v["type"] == "event" {
                // In order, and the same instant as ts_ns through the recording's clock.
                assert!(t >= last.as_str(), "{t} < {last}");
                last = t.to_string();
            }
            types.insert(v["type"].as_str().unwrap().to_string());
            if args.contains(&"-T") && v["type"] == "event" {
                assert!(v["epoch_ns"].is_i64() || v["epoch_ns"].is_u64(), "{l}");
                let local = v["local_time"].as_str().unwrap();
                assert_eq!(local.len(), 15, "{local}");
            }
        }
        assert!(types.contains("stats"), "{types:?}");
    }
}

#[test]
fn completions_and_man_page() {
    for (shell, file_marker) in [
        ("bash", "complete -F _tcp__trace"),
        ("zsh", "#compdef tcp-trace"),
        ("fish", "complete -c tcp-trace"),
    ] {
        let o = run(&["completions", shell], &[]);
        assert!(o.status.success());
        let text = String::from_utf8(o.stdout).unwrap();
        assert!(text.contains(file_marker), "{shell}");
        for w in [
            "record",
            "replay",
            "lab",
            "--localport",
            "--remoteport",
            "--netns",
            "--failed",
            "--min-ms",
            "--color",
            "--svg",
            "--port",
            "--json",
            "--view",
        ] {
            let w = if shell == "fish" {
                w.trim_start_matches("--")
            } else {
                w
            };
            assert!(text.contains(w), "{shell} completions lack {w}");
        }
    }
    assert_eq!(run(&["completions", "tcsh"], &[]).status.code(), Some(2));
    // Hidden from --help, working all the same.
    let help = String::from_utf8(run(&["--help"], &[]).stdout).unwrap();
    assert!(
        !help.contains("completions") && !help.contains("\n  man"),
        "{help}"
    );
    let o = run(&["man"], &[]);
    assert!(o.status.success());
    let roff = String::from_utf8(o.stdout).unwrap();
    for want in [
        ".TH tcp-trace 1",
        ".SH NAME",
        "tcp\\-trace \\- Every TCP connection",
        ".SH SYNOPSIS",
        ".SH OPTIONS",
        "\\fB\\-L\\fR, \\fB\\-\\-localport\\fR",
        "\\fB\\-\\-min\\-ms\\fR",
        "\\fB\\-\\-svg\\fR",
        "OPTIONS OF TCP-TRACE REPLAY",
    ] {
        assert!(roff.contains(want), "man page lacks {want}");
    }
    // man(1) itself reads it, when installed.
    if Command::new("man")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let dir = fresh_dir("man");
        let page = dir.join("tcp-trace.1");
        std::fs::write(&page, &roff).unwrap();
        let o = Command::new("man")
            .arg("-l")
            .arg(&page)
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            text.contains("SYNOPSIS") && text.contains("--localport"),
            "{text}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// On a real terminal (a pty from util-linux `script`), auto colours, and
/// `NO_COLOR` turns it off. Skipped loudly without `script`.
#[test]
fn colour_on_a_terminal_unless_no_color() {
    if !Command::new("script")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        eprintln!("SKIPPED colour_on_a_terminal_unless_no_color: no util-linux `script`");
        return;
    }
    let rec = recording(LOOPBACK_V4);
    let line = format!("{TRACER} replay {} 2>/dev/null", rec.display());
    let on_tty = |no_color: Option<&str>| {
        let mut c = Command::new("script");
        c.args(["-qec", &line, "/dev/null"]).env_remove("NO_COLOR");
        if let Some(v) = no_color {
            c.env("NO_COLOR", v);
        }
        String::from_utf8(c.output().unwrap().stdout).unwrap()
    };
    assert!(
        on_tty(None).contains("\x1b[36m-- SYN -"),
        "{:?}",
        on_tty(None)
    );
    assert!(
        on_tty(Some("")).contains("\x1b["),
        "empty NO_COLOR is unset"
    );
    let off = on_tty(Some("1"));
    assert!(off.contains("-- SYN -") && !off.contains('\x1b'), "{off:?}");
}
