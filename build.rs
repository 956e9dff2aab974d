//! Link settings for the `strongroom` binary.

fn main() {
    // Relative relocations packed as DT_RELR (glibc 2.36+): the loader
    // reads a few kilobytes at start instead of a 480 KB relocation table,
    // which otherwise stays resident in every server process.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu")
    {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
