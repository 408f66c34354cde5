//! The ladder as a picture (`--svg FILE`): per conversation, the client's lane on the
//! left and the server's on the right, one row per step of the text ladder (the same
//! rows, from [`ladder::steps`]), segments as arrows labelled with their time,
//! retransmits dashed orange, resets red, `connect()` / `accept()` returns as dots on
//! their lane.
//!
//! Time runs down. Rows are never closer than [`ROW`] pixels, so 50 µs between two
//! steps stays readable; a longer gap adds space growing with its logarithm (capped),
//! and a gap of [`BREAK_NS`] or more is drawn as a break in both lanes labelled with
//! its length, so 1.5 s does not push the rest off the page. The time column gives
//! each row's exact time.
//!
//! Written by hand; every text from the trace (comm, addresses) is escaped.
use std::fmt::Write as _;

use super::ladder::{self, Steps};
use crate::correlate::Conversation;

const WIDTH: f64 = 1100.0;
const X_TIME: f64 = 12.0;
const X_LEFT: f64 = 400.0;
const X_RIGHT: f64 = 800.0;
/// Least distance between two rows.
const ROW: f64 = 24.0;
/// Height of a conversation's head (lane names).
const HEAD: f64 = 52.0;
/// Space between two conversations.
const GAP_CONV: f64 = 36.0;
/// Height of the title and legend.
const TOP: f64 = 64.0;
/// Gaps at least this long are drawn as a break in the lanes.
pub const BREAK_NS: u64 = 20_000_000;

const BLUE: &str = "#1f5fbf";
const PURPLE: &str = "#7b3fa0";
const ORANGE: &str = "#d07800";
const RED: &str = "#c81e1e";
const GREY: &str = "#555555";
const GREEN: &str = "#1e7a32";

/// Extra space for a gap between two rows: none under 1 ms, then growing with the
/// gap's logarithm, at most 48 px (1.5 s adds 40 px, 50 µs nothing).
pub fn gap_px(gap_ns: u64) -> f64 {
    if gap_ns < 1_000_000 {
        return 0.0;
    }
    let decades = (gap_ns as f64 / 1e6).log10();
    (8.0 + 10.0 * decades).min(48.0)
}

/// `s` with `&`, `<`, `>`, `"`, `'` escaped and control characters dropped.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// `0.076`, `1500.433` (milliseconds, three decimals).
fn ms(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1e6)
}

/// A gap's length for the break mark: `1.500 s`, `40.4 ms`.
fn gap_text(ns: u64) -> String {
    if ns >= 1_000_000_000 {
        format!("{:.3} s", ns as f64 / 1e9)
    } else {
        format!("{:.1} ms", ns as f64 / 1e6)
    }
}

/// (colour, dashed, stroke width) of an arrow with this label.
fn arrow_style(label: &str) -> (&'static str, bool, f64) {
    if label.contains("RST") {
        (RED, false, 2.5)
    } else if label.contains("retransmit") {
        (ORANGE, true, 2.0)
    } else if label.starts_with("FIN") || label == "ACK of FIN" {
        (PURPLE, false, 1.5)
    } else {
        (BLUE, false, 1.5)
    }
}

fn is_syscall(text: &str) -> bool {
    text.starts_with("connect(") || text.starts_with("accept")
}

/// The colour and weight of a lane's cell.
fn cell_style(text: &str) -> (&'static str, &'static str) {
    if is_syscall(text) {
        if text.contains("= -") && !text.contains("EINPROGRESS") {
            (RED, "bold")
        } else {
            ("#000000", "bold")
        }
    } else if text.contains("RST") {
        (RED, "normal")
    } else if text == "ESTABLISHED" {
        (GREEN, "normal")
    } else {
        ("#222222", "normal")
    }
}

/// Draws one conversation from `y0`; returns where it ends.
fn conversation(out: &mut String, st: &Steps, y0: f64) -> f64 {
    let _ = write!(
        out,
        r#"<g class="conversation"><text x="{X_LEFT}" y="{}" text-anchor="middle" font-weight="bold">{}</text><text x="{X_RIGHT}" y="{}" text-anchor="middle" font-weight="bold">{}</text><text x="{X_TIME}" y="{}" fill="{GREY}">time (ms)</text>"#,
        y0 + 18.0,
        esc(&st.left_head),
        y0 + 18.0,
        esc(&st.right_head),
        y0 + 18.0,
    );
    let lane_top = y0 + HEAD - 20.0;
    let mut body = String::new();
    let mut breaks: Vec<(f64, f64)> = Vec::new();
    let mut y = y0 + HEAD;
    let mut prev: Option<u64> = None;
    for s in &st.steps {
        if let Some(p) = prev {
            let gap = s.t_ns.saturating_sub(p);
            let extra = gap_px(gap);
            if gap >= BREAK_NS {
                let mid = y + (ROW + extra) / 2.0 - 4.0;
                breaks.push((mid, 0.0));
                let _ = write!(
                    body,
                    r#"<text x="{}" y="{}" text-anchor="middle" fill="{GREY}" font-style="italic" class="gap">… {} …</text>"#,
                    (X_LEFT + X_RIGHT) / 2.0,
                    mid + 4.0,
                    gap_text(gap)
                );
            }
            y += ROW + extra;
        }
        prev = Some(s.t_ns);
        let t = s.t_ns.saturating_sub(st.t0_ns);
        let _ = write!(
            body,
            r#"<text x="{X_TIME}" y="{}" fill="{GREY}" class="t">{}</text>"#,
            y + 4.0,
            ms(t)
        );
        if let Some((to_right, label)) = &s.arrow {
            let (colour, dashed, width) = arrow_style(label);
            let (x1, x2) = if *to_right {
                (X_LEFT, X_RIGHT)
            } else {
                (X_RIGHT, X_LEFT)
            };
            let dir = if *to_right { 1.0 } else { -1.0 };
            let tip = x2 - dir * 1.0;
            let dash = if dashed {
                r#" stroke-dasharray="7 4""#
            } else {
                ""
            };
            let _ = write!(
                body,
                r#"<line x1="{x1}" y1="{y}" x2="{}" y2="{y}" stroke="{colour}" stroke-width="{width}"{dash}/><polygon points="{tip},{y} {},{} {},{}" fill="{colour}"/><text x="{}" y="{}" text-anchor="middle" fill="{colour}" class="seg">{} · {} ms</text>"#,
                tip - dir * 8.0,
                tip - dir * 10.0,
                y - 4.5,
                tip - dir * 10.0,
                y + 4.5,
                (X_LEFT + X_RIGHT) / 2.0,
                y - 5.0,
                esc(label),
                ms(t)
            );
        }
        for (text, x, anchor, lane) in [
            (&s.left, X_LEFT - 10.0, "end", X_LEFT),
            (&s.right, X_RIGHT + 10.0, "start", X_RIGHT),
        ] {
            if text.is_empty() {
                continue;
            }
            let (colour, weight) = cell_style(text);
            let r = if is_syscall(text) { 5.0 } else { 3.0 };
            let _ = write!(
                body,
                r#"<circle cx="{lane}" cy="{y}" r="{r}" fill="{colour}"/><text x="{x}" y="{}" text-anchor="{anchor}" fill="{colour}" font-weight="{weight}">{}</text>"#,
                y + 4.0,
                esc(text)
            );
        }
    }
    let lane_bottom = y + 14.0;
    // Lanes first (under everything), with their breaks; an end this host did not
    // see (`(remote)`) dashed.
    for (x, head) in [(X_LEFT, &st.left_head), (X_RIGHT, &st.right_head)] {
        let unseen = if head.starts_with("(remote)") {
            r#" stroke-dasharray="3 4""#
        } else {
            ""
        };
        let mut from = lane_top;
        for &(mid, _) in &breaks {
            let _ = write!(
                out,
                r##"<line x1="{x}" y1="{from}" x2="{x}" y2="{}" stroke="#999999" stroke-width="1.5"{unseen}/><path d="M{} {} L{} {} M{} {} L{} {}" stroke="#999999" stroke-width="1.5" class="break"/>"##,
                mid - 5.0,
                x - 7.0,
                mid - 3.0,
                x + 7.0,
                mid - 7.0,
                x - 7.0,
                mid + 7.0,
                x + 7.0,
                mid + 3.0,
            );
            from = mid + 5.0;
        }
        let _ = write!(
            out,
            r##"<line x1="{x}" y1="{from}" x2="{x}" y2="{lane_bottom}" stroke="#999999" stroke-width="1.5"{unseen}/>"##
        );
    }
    out.push_str(&body);
    out.push_str("</g>\n");
    lane_bottom
}

/// The whole picture: the conversations one under the other. `dropped`:
/// conversations left out (said at the bottom).
pub fn render(convs: &[Conversation], dropped: u64) -> String {
    let mut body = String::new();
    let mut y = TOP;
    for conv in convs {
        let st = ladder::steps(conv);
        y = conversation(&mut body, &st, y) + GAP_CONV;
    }
    if convs.is_empty() {
        let _ = write!(
            body,
            r#"<text x="{}" y="{}" text-anchor="middle" fill="{GREY}">no connections</text>"#,
            WIDTH / 2.0,
            y + 20.0
        );
        y += 40.0;
    }
    if dropped > 0 {
        let _ = write!(
            body,
            r#"<text x="{X_TIME}" y="{}" fill="{GREY}">… {dropped} more conversation(s) not drawn</text>"#,
            y
        );
        y += 20.0;
    }
    let height = y.ceil();
    let mut out = String::with_capacity(body.len() + 2048);
    let _ = write!(
        out,
        r##"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="12">
<title>tcp-trace: {} conversation(s)</title>
<rect width="100%" height="100%" fill="#ffffff"/>
<text x="{X_TIME}" y="22" font-size="15" font-weight="bold">tcp-trace — {} conversation(s), client on the left, server on the right</text>
"##,
        convs.len(),
        convs.len()
    );
    // Legend.
    let legend: [(&str, &str, bool); 4] = [
        ("SYN / SYN-ACK / ACK", BLUE, false),
        ("FIN", PURPLE, false),
        ("retransmit", ORANGE, true),
        ("RST", RED, false),
    ];
    let mut x = X_TIME;
    for (name, colour, dashed) in legend {
        let dash = if dashed {
            r#" stroke-dasharray="7 4""#
        } else {
            ""
        };
        let _ = write!(
            out,
            r#"<line x1="{x}" y1="42" x2="{}" y2="42" stroke="{colour}" stroke-width="2"{dash}/><text x="{}" y="46" fill="{colour}">{name}</text>"#,
            x + 28.0,
            x + 34.0
        );
        x += 34.0 + name.len() as f64 * 7.3 + 24.0;
    }
    let _ = write!(
        out,
        r##"<circle cx="{}" cy="42" r="5" fill="#000000"/><text x="{}" y="46">connect()/accept() return</text><text x="{}" y="46" fill="{GREY}" font-style="italic">// = long gap, compressed</text>"##,
        x + 5.0,
        x + 16.0,
        x + 16.0 + 26.0 * 7.3 + 24.0
    );
    out.push('\n');
    out.push_str(&body);
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlate::conversations;
    use crate::correlate::testutil::{Ev, MS, US, design_sequence, run};
    use crate::decode::TcpState::*;

    #[test]
    fn escapes() {
        assert_eq!(esc("a<b>&\"c'\u{1}"), "a&lt;b&gt;&amp;&quot;c&#39;");
    }

    #[test]
    fn gaps_compress() {
        assert_eq!(gap_px(50_000), 0.0);
        let s = gap_px(1_500_000_000);
        assert!(s > 30.0 && s <= 48.0, "{s}");
        assert_eq!(gap_px(u64::MAX), 48.0);
    }

    #[test]
    fn design_picture() {
        let convs = conversations(run(&design_sequence()));
        let svg = render(&convs, 0);
        assert!(svg.starts_with("<?xml"));
        assert!(svg.trim_end().ends_with("</svg>"));
        for want in [
            ">SYN · 0.000 ms<",
            "SYN-ACK",
            "connect() = 0",
            "accept",
            "ESTABLISHED",
            "client ",
            "server ",
        ] {
            assert!(svg.contains(want), "missing {want}:\n{svg}");
        }
        // Balanced groups, one per conversation.
        assert_eq!(svg.matches("<g ").count(), svg.matches("</g>").count());
        assert_eq!(svg.matches(r#"class="conversation""#).count(), convs.len());
    }

    /// A refused connect with a SYN retransmit 1 s in: a break mark with the gap,
    /// the retransmit dashed orange, the RST red, the failed connect() red.
    #[test]
    fn refused_with_retransmit_and_break() {
        let sv = "127.0.0.1:9";
        let conns = run(&[
            Ev::tr(0, 1, Close, SynSent)
                .tuple("127.0.0.1:0", sv)
                .owner(7, "a<b>&c")
                .task()
                .ev(),
            Ev::retx(1_000 * MS, 1, SynSent)
                .tuple("127.0.0.1:40000", sv)
                .ev(),
            Ev::rst_recv(1_000 * MS + 50 * US, 1)
                .tuple("127.0.0.1:40000", sv)
                .ev(),
            Ev::tr(1_000 * MS + 51 * US, 1, SynSent, Close)
                .tuple("127.0.0.1:40000", sv)
                .ev(),
            Ev::connect(1_000 * MS + 60 * US, 1, 3, -111)
                .owner(7, "a<b>&c")
                .task()
                .ev(),
        ]);
        let convs = conversations(conns);
        let svg = render(&convs, 3);
        assert!(svg.contains("a&lt;b&gt;&amp;c"), "{svg}");
        assert!(!svg.contains("a<b>"), "{svg}");
        assert!(svg.contains("… 1.000 s …"), "{svg}");
        assert!(svg.contains(r#"class="break""#), "{svg}");
        assert!(
            svg.contains(&format!(
                r#"stroke="{ORANGE}" stroke-width="2" stroke-dasharray="7 4""#
            )),
            "{svg}"
        );
        assert!(svg.contains(">SYN retransmit #1 · 1000.000 ms<"), "{svg}");
        assert!(svg.contains(">RST · 1000.050 ms<"), "{svg}");
        assert!(
            svg.contains(&format!(
                r#"fill="{RED}" font-weight="bold">connect() = -111 ECONNREFUSED<"#
            )),
            "{svg}"
        );
        assert!(svg.contains("3 more conversation(s) not drawn"));
        // The server was not seen: its lane is dashed, the client's is not.
        let dashed: Vec<&str> = svg
            .split("<line ")
            .filter(|l| l.contains(r#"stroke-dasharray="3 4""#))
            .collect();
        assert!(!dashed.is_empty(), "{svg}");
        assert!(
            dashed.iter().all(|l| l.starts_with(r#"x1="800""#)),
            "{dashed:?}"
        );
        // The 50 µs between the retransmit and the RST keeps a full row.
        let y_of = |label: &str| -> f64 {
            let i = svg.find(label).unwrap();
            let head = &svg[..i];
            let j = head.rfind("<text x=\"600\" y=\"").unwrap() + 17;
            head[j..].split('"').next().unwrap().parse().unwrap()
        };
        let d = y_of(">RST · ") - y_of(">SYN retransmit #1");
        assert!(d >= ROW, "{d}");
    }
}
