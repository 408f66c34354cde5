//! Builds the eBPF object (tcp-trace-ebpf) for bpfel-unknown-none with the nightly
//! toolchain and bpf-linker, so that plain `cargo build` embeds it. `cargo xtask
//! setup` installs what this needs. With AYA_BUILD_SKIP=1 (unit tests of pure
//! modules, docs) no object is built and the loader reports that at run time.
fn main() -> anyhow::Result<()> {
    println!("cargo::rustc-check-cfg=cfg(ebpf_object)");
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tcp-trace-ebpf");
    let package = aya_build::Package {
        name: "tcp-trace-ebpf",
        root_dir: dir,
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default())?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("tcp-trace");
    if out.exists() {
        println!("cargo:rustc-cfg=ebpf_object");
    }
    Ok(())
}
