//! tracefs: found where it is mounted, or mounted when absent and permitted.
use std::io;
use std::path::{Path, PathBuf};

use super::LoadError;
use crate::privilege::{self, Caps};

const TRACEFS_PATHS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

fn tracefs_mounted(p: &Path) -> bool {
    p.join("events").is_dir()
}

/// Finds a mounted tracefs, mounting it at /sys/kernel/tracing when absent and
/// permitted (CAP_SYS_ADMIN).
pub fn find_or_mount_tracefs(caps: &Caps) -> Result<PathBuf, LoadError> {
    for p in TRACEFS_PATHS {
        let p = Path::new(p);
        match p.join("events").metadata() {
            Ok(m) if m.is_dir() => return Ok(p.to_path_buf()),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return Err(LoadError::TracefsUnreadable {
                    path: p.to_path_buf(),
                    err: e.to_string(),
                });
            }
            _ => {}
        }
    }
    let target = Path::new(TRACEFS_PATHS[0]);
    if !caps.has(privilege::CAP_SYS_ADMIN) {
        return Err(LoadError::NoTracefs(
            "mounting needs CAP_SYS_ADMIN".to_string(),
        ));
    }
    privilege::mount_tracefs(target).map_err(|e| LoadError::NoTracefs(e.to_string()))?;
    if tracefs_mounted(target) {
        eprintln!("tcp-trace: mounted tracefs at {}", target.display());
        Ok(target.to_path_buf())
    } else {
        Err(LoadError::NoTracefs(
            "mount succeeded but events/ is missing".into(),
        ))
    }
}
