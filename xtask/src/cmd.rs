//! Running commands: echo them (`+ cmd args`), run or capture them, and carry a child's
//! exit code up to `main`.

use std::{
    env,
    ffi::OsStr,
    fmt, fs,
    os::unix::{fs::PermissionsExt, process::ExitStatusExt},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
};

use anyhow::{Context, Result, anyhow};

/// The workspace root: xtask lives in `<root>/xtask`.
pub fn workspace_root() -> Result<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| {
            anyhow!(
                "xtask manifest dir {} has no parent",
                env!("CARGO_MANIFEST_DIR")
            )
        })
}

/// A child process that ran and failed. `main` exits with `code`.
#[derive(Debug)]
pub struct ChildFailed {
    pub command: String,
    pub code: i32,
}

impl fmt::Display for ChildFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` failed with exit code {}", self.command, self.code)
    }
}

impl std::error::Error for ChildFailed {}

/// The exit code a shell would report: the code, or 128 + signal.
pub fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=+:,@%".contains(c));
    if plain {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The command as a shell line, with the variables it sets in front.
pub fn display(cmd: &Command) -> String {
    let mut parts: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| v.map(|v| format!("{}={}", k.to_string_lossy(), quote(v))))
        .collect();
    parts.push(quote(cmd.get_program()));
    parts.extend(cmd.get_args().map(quote));
    parts.join(" ")
}

/// Prints `+ cmd args` on stderr.
pub fn echo(cmd: &Command) {
    eprintln!("+ {}", display(cmd));
}

/// Echoes and runs `cmd` with inherited stdio; returns its status.
pub fn status(cmd: &mut Command) -> Result<ExitStatus> {
    echo(cmd);
    cmd.status()
        .with_context(|| format!("failed to start `{}`", display(cmd)))
}

/// Echoes and runs `cmd`; a non-zero exit is a `ChildFailed` error.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = status(cmd)?;
    if status.success() {
        Ok(())
    } else {
        Err(ChildFailed {
            command: display(cmd),
            code: exit_code(status),
        }
        .into())
    }
}

/// Runs `cmd` silently (a probe, not echoed) and returns its stdout; a non-zero exit is
/// an error that carries the command's stderr.
pub fn capture(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("failed to start `{}`", display(cmd)))?;
    if !out.status.success() {
        return Err(anyhow!(
            "`{}` failed with exit code {}: {}",
            display(cmd),
            exit_code(out.status),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{}` printed non-UTF-8", display(cmd)))
}

/// The effective uid, from /proc/self/status (falls back to `id -u`).
pub fn euid() -> Result<u32> {
    if let Ok(status) = fs::read_to_string("/proc/self/status") {
        // "Uid:\treal\teffective\tsaved\tfs"
        if let Some(euid) = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            .and_then(|id| id.parse().ok())
        {
            return Ok(euid);
        }
    }
    let out = capture(Command::new("id").arg("-u"))?;
    out.trim()
        .parse()
        .with_context(|| format!("`id -u` printed {out:?}"))
}

pub fn is_root() -> Result<bool> {
    Ok(euid()? == 0)
}

/// The first executable `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path).map(|dir| dir.join(name)).find(|p| {
        fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}
