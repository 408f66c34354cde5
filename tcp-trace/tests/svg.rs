//! `--svg FILE`: the picture of a real recording, checked as text and rendered by a
//! real headless browser (Debian's `chromium`), whose screenshot must not be blank.
//! Without chromium the browser part is SKIPPED loudly, unless
//! TCP_TRACE_PRIVILEGED_TESTS=1 (then chromium is required: `cargo xtask setup`
//! installs it).
mod common;

use std::path::Path;
use std::process::Command;

use common::{LOOPBACK_V4, REFUSED_V6, fresh_dir, replay};

/// `tcp-trace replay REC --svg OUT EXTRA…`; returns the SVG text.
fn replay_svg(rec: &str, out: &Path, extra: &[&str]) -> String {
    let mut args = vec!["--svg", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    let err = replay(rec, &args).ok().stderr;
    assert!(err.contains("wrote 1 conversation(s) to"), "{err}");
    std::fs::read_to_string(out).unwrap()
}

#[test]
fn svg_texts_of_a_recording() {
    let d = fresh_dir("svg-texts");
    let svg = replay_svg(LOOPBACK_V4, &d.join("a.svg"), &["--view", "conns"]);
    for want in [
        "<svg xmlns=\"http://www.w3.org/2000/svg\"",
        "client 127.0.0.1:33320 (python3 31876)",
        "server 127.0.0.1:8123 (python3 31876)",
        ">SYN · 0.000 ms<",
        ">SYN-ACK · 0.062 ms<",
        "connect() = 0",
        "accept4() = 5",
        "… 40.2 ms …",
        "FIN_WAIT1",
        "LAST_ACK",
    ] {
        assert!(svg.contains(want), "missing {want:?}");
    }
    let svg = replay_svg(REFUSED_V6, &d.join("b.svg"), &[]);
    assert!(svg.contains("connect() = -111 ECONNREFUSED"), "{svg}");
    assert!(svg.contains(">RST · "), "{svg}");
    let _ = std::fs::remove_dir_all(&d);
}

/// Non-white pixels of an RGB(A) PNG, and how many of them lie in each third of
/// the width.
fn ink(png_path: &Path) -> (u64, [u64; 3], u32, u32) {
    let dec = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(png_path).unwrap(),
    ));
    let mut reader = dec.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let ch = match info.color_type {
        png::ColorType::Rgba => 4,
        png::ColorType::Rgb => 3,
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let (w, h) = (info.width, info.height);
    let mut total = 0;
    let mut thirds = [0u64; 3];
    for y in 0..h as usize {
        let row = &buf[y * info.line_size..][..w as usize * ch];
        for x in 0..w as usize {
            let p = &row[x * ch..][..3];
            if p.iter().any(|&c| c < 200) {
                total += 1;
                thirds[(x * 3 / w as usize).min(2)] += 1;
            }
        }
    }
    (total, thirds, w, h)
}

#[test]
fn svg_renders_in_headless_chromium() {
    let required = std::env::var("TCP_TRACE_PRIVILEGED_TESTS").is_ok_and(|v| v == "1");
    let chromium = ["chromium", "chromium-browser"].into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let Some(chromium) = chromium else {
        if required {
            panic!(
                "chromium is required with TCP_TRACE_PRIVILEGED_TESTS=1 (apt-get install chromium)"
            );
        }
        eprintln!(
            "SKIPPED svg_renders_in_headless_chromium: chromium not installed (apt-get install chromium)"
        );
        return;
    };
    let d = fresh_dir("svg-browser");
    let svg_path = d.join("ladder.svg");
    let svg = replay_svg(LOOPBACK_V4, &svg_path, &[]);
    assert!(svg.contains("accept4() = 5"));
    let png_path = d.join("out.png");
    let o = Command::new("timeout")
        .arg("120")
        .arg(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", d.join("profile").display()))
        .arg(format!("--screenshot={}", png_path.display()))
        .arg("--window-size=1200,800")
        .arg(&svg_path)
        .env("HOME", &d)
        .output()
        .unwrap();
    assert!(
        png_path.exists(),
        "chromium wrote no screenshot ({}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    let (total, thirds, w, h) = ink(&png_path);
    assert_eq!((w, h), (1200, 800));
    // Lanes, arrows and texts: thousands of dark pixels, in every third of the
    // width (time column and client, arrows, server).
    assert!(
        total > 5_000,
        "screenshot nearly blank: {total} non-white pixels"
    );
    assert!(total < 1200 * 800 / 2, "screenshot mostly dark: {total}");
    for (i, n) in thirds.iter().enumerate() {
        assert!(*n > 500, "third {i} of the screenshot is blank: {thirds:?}");
    }
    eprintln!(
        "chromium screenshot: {total} non-white pixels ({thirds:?}) in {}",
        png_path.display()
    );
    if std::env::var_os("TCP_TRACE_KEEP_SVG").is_none() {
        let _ = std::fs::remove_dir_all(&d);
    }
}
