//! The kernel BTF reader: parse, then the look-ups the loader makes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tcp_trace::layout::{self, btf::Btf};

fuzz_target!(|data: &[u8]| {
    let Ok(btf) = Btf::parse(data) else {
        return;
    };
    let _ = btf.member("sock.__sk_common.skc_num");
    let _ = btf.member("file.private_data");
    let _ = btf.typedef_ids(&["btf_trace_inet_sock_set_state", "x"]);
    let _ = layout::kernel_offsets(&btf);
});
