//! Link flags for the `tandem` binary.

fn main() {
    // Pack relative relocations (DT_RELR, glibc >= 2.36, binutils >= 2.38): the dynamic
    // loader reads a few KB instead of ~1.3 MB of `.rela.dyn` in every process it starts
    // (proxy, shim, sandbox), which is both start-up time and resident memory. The binary
    // stays position independent.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu")
    {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
