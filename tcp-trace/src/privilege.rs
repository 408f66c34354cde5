//! Privilege checks, named by capability, before anything is loaded.
use std::ffi::CString;
use std::io;
use std::path::Path;

pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// The effective capability set of this process (`CapEff` in /proc/self/status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    pub effective: u64,
    /// Running in a user namespace other than the initial one (rootless
    /// container): capabilities there do not count for bpf().
    pub in_user_ns: bool,
}

impl Caps {
    pub fn current() -> Caps {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let uid_map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
        Caps {
            effective: parse_cap_eff(&status).unwrap_or(0),
            in_user_ns: !is_initial_uid_map(&uid_map),
        }
    }

    pub fn has(&self, cap: u32) -> bool {
        self.effective & (1u64 << cap) != 0
    }

    /// `None` when bpf() and perf_event_open() are allowed; else one line naming
    /// the missing capability.
    pub fn missing_for_bpf(&self) -> Option<String> {
        let admin = self.has(CAP_SYS_ADMIN);
        let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
            .iter()
            .filter(|(c, _)| !admin && !self.has(*c))
            .map(|(_, n)| *n)
            .collect();
        if missing.is_empty() {
            if self.in_user_ns {
                // Capabilities held inside a user namespace are not capabilities in
                // the initial namespace, which is where bpf() checks them.
                return Some(
                    "running in a user namespace (rootless container?): bpf() needs CAP_BPF and CAP_PERFMON in the initial user namespace; run tcp-trace as root on the host or in a rootful container".to_string(),
                );
            }
            return None;
        }
        Some(format!(
            "missing capability {}: tcp-trace needs CAP_BPF and CAP_PERFMON (or root) to load its eBPF programs",
            missing.join(" and ")
        ))
    }
}

/// The value of `NAME:` in a /proc/PID/status text, trimmed.
pub fn status_field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|r| r.strip_prefix(':'))
            .map(str::trim)
    })
}

/// Parses the hex `CapEff:` line of /proc/PID/status.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    u64::from_str_radix(status_field(status, "CapEff")?, 16).ok()
}

/// The initial user namespace maps the whole uid range onto itself.
pub fn is_initial_uid_map(map: &str) -> bool {
    let f: Vec<&str> = map.split_whitespace().collect();
    f.len() == 3 && f[0] == "0" && f[1] == "0" && f[2] == "4294967295"
}

pub fn mount_tracefs(target: &Path) -> io::Result<()> {
    let c = |s: &str| CString::new(s).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e));
    let src = c("nodev")?;
    let fstype = c("tracefs")?;
    let tgt = c(&target.to_string_lossy())?;
    // SAFETY: all pointers are valid NUL-terminated strings for the call's duration.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_eff_parsed() {
        let s = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000000c000000000\n";
        let v = parse_cap_eff(s).unwrap();
        let caps = Caps {
            effective: v,
            in_user_ns: false,
        };
        assert!(caps.has(CAP_BPF) && caps.has(CAP_PERFMON) && !caps.has(CAP_SYS_ADMIN));
        assert_eq!(caps.missing_for_bpf(), None);
    }

    #[test]
    fn missing_caps_named() {
        let only_bpf = Caps {
            effective: 1 << CAP_BPF,
            in_user_ns: false,
        };
        let m = only_bpf.missing_for_bpf().unwrap();
        assert!(m.contains("missing capability CAP_PERFMON"), "{m}");
        assert!(!m.contains("CAP_BPF and CAP_PERFMON:"), "{m}");
        let none = Caps {
            effective: 0,
            in_user_ns: false,
        };
        assert!(
            none.missing_for_bpf()
                .unwrap()
                .contains("missing capability CAP_BPF and CAP_PERFMON")
        );
        let admin = Caps {
            effective: 1 << CAP_SYS_ADMIN,
            in_user_ns: false,
        };
        assert_eq!(admin.missing_for_bpf(), None);
        let rootless = Caps {
            effective: u64::MAX,
            in_user_ns: true,
        };
        assert!(
            rootless
                .missing_for_bpf()
                .unwrap()
                .contains("user namespace")
        );
    }

    #[test]
    fn uid_map() {
        assert!(is_initial_uid_map("         0          0 4294967295\n"));
        assert!(!is_initial_uid_map("         0       1000          1\n"));
    }
}
