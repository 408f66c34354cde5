//! Kernel side of tcp-trace, split by job as the hooks use it: configuration, maps,
//! kernel reads, owners, the per-event records and the per-connection books, then the
//! hooks (TCP state, `tcp:*`, syscalls), each on the attach paths it has.
//!
//! Field offsets are data: userspace reads them from the running kernel (tracefs
//! `format` files and BTF) and writes them into the read-only globals of `config` before
//! load, so one object runs on every kernel we test (6.1 … 6.18).
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]

macro_rules! both_paths {
    ($btf:ident, $raw:ident, $tp:literal, |$c:ident| $body:expr) => {
        #[btf_tracepoint(function = $tp)]
        pub fn $btf($c: BtfTracePointContext) -> i32 {
            $body;
            0
        }
        #[raw_tracepoint(tracepoint = $tp)]
        pub fn $raw($c: RawTracePointContext) -> i32 {
            $body;
            0
        }
    };
}

mod books;
mod config;
mod emit;
mod klog;
mod kread;
mod maps;
mod owner;
mod state;
mod syscalls;
mod tcp;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
