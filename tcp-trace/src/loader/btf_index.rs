//! The synthetic BTF index handed to aya for loading tp_btf programs.
use super::hooks::tp_btf_targets;
use crate::layout::btf::Btf;

/// An `aya::Btf` that holds, at their vmlinux type ids, only the typedefs
/// `btf_trace_<tp>` of `tp_btf_targets()`; every other id is a placeholder
/// pointer. Loading a tp_btf program asks its `Btf` for exactly that (the id of
/// the typedef with that name, `BtfTracePoint::load`), so this index answers as
/// the full vmlinux BTF would, without aya parsing the 5 MB file a second time
/// (~30 ms). `None` when one of the typedefs is missing. (A member lookup in aya's
/// BTF would make both parses one: proposed in docs/upstream.md.)
pub(super) fn tp_btf_index(btf: &Btf) -> Option<aya::Btf> {
    const KIND_PTR: u32 = 2;
    const KIND_TYPEDEF: u32 = 8;
    let names: Vec<String> = tp_btf_targets()
        .map(|tp| format!("btf_trace_{tp}"))
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut wanted: Vec<(u32, String)> = btf
        .typedef_ids(&refs)
        .into_iter()
        .zip(names)
        .map(|(id, name)| id.map(|id| (id, name)))
        .collect::<Option<_>>()?;
    wanted.sort();
    let max_id = wanted.last()?.0;
    let mut strings = vec![0u8];
    let mut name_offs = Vec::new();
    for (_, name) in &wanted {
        name_offs.push(strings.len() as u32);
        strings.extend_from_slice(name.as_bytes());
        strings.push(0);
    }
    let type_len = max_id as usize * 12;
    let mut blob = Vec::with_capacity(24 + type_len + strings.len());
    for word in [0x0001_eb9f_u32, 24, 0, type_len as u32, type_len as u32] {
        blob.extend_from_slice(&word.to_le_bytes());
    }
    blob.extend_from_slice(&(strings.len() as u32).to_le_bytes());
    let mut next = wanted.iter().zip(&name_offs).peekable();
    for id in 1..=max_id {
        let (name_off, kind) = match next.peek() {
            Some(((want, _), off)) if *want == id => {
                let off = **off;
                next.next();
                (off, KIND_TYPEDEF)
            }
            _ => (0, KIND_PTR),
        };
        for word in [name_off, kind << 24, 0] {
            blob.extend_from_slice(&word.to_le_bytes());
        }
    }
    blob.extend_from_slice(&strings);
    aya::Btf::parse(&blob, aya::Endianness::default()).ok()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use aya_obj::btf::BtfKind;

    /// The small index answers every tp_btf target as aya's parse of the whole
    /// vmlinux BTF does (the id is what the kernel checks the program against).
    #[test]
    fn tp_btf_index_matches_full_vmlinux_btf() {
        let path = Path::new("/sys/kernel/btf/vmlinux");
        assert!(path.exists(), "these tests need a kernel with BTF");
        let ours = Btf::from_file(path).unwrap_or_else(|e| panic!("{e}"));
        let index = tp_btf_index(&ours).expect("every btf_trace_ typedef is in vmlinux");
        let full = aya::Btf::from_sys_fs().expect("aya parses vmlinux");
        for tp in tp_btf_targets() {
            let name = format!("btf_trace_{tp}");
            let want = full
                .id_by_type_name_kind(&name, BtfKind::Typedef)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let got = index
                .id_by_type_name_kind(&name, BtfKind::Typedef)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got, want, "{name}");
        }
        // A name that is not a target is not found (no false positives).
        assert!(
            index
                .id_by_type_name_kind("btf_trace_tcp_destroy_sock", BtfKind::Typedef)
                .is_err()
        );
    }

    /// A target missing from the kernel's BTF gives no index (and so no tp_btf
    /// path), rather than a wrong id.
    #[test]
    fn tp_btf_index_needs_every_target() {
        let ours = Btf::from_file("/sys/kernel/btf/vmlinux").unwrap_or_else(|e| panic!("{e}"));
        let ids = ours.typedef_ids(&["btf_trace_inet_sock_set_state", "btf_trace_no_such_tp"]);
        assert!(ids[0].is_some());
        assert_eq!(ids[1], None);
    }
}
