//! The `strongroom` binary: everything lives in the library.

fn main() -> std::process::ExitCode {
    return_large_blocks();
    strongroom::cli::main()
}

/// glibc raises its mmap threshold each time a large block is freed (up to
/// 32 MiB), after which large answers come from the heap and their memory
/// is kept after the load is gone (578-737 MB here after a flood of
/// unread batch answers). A fixed threshold keeps blocks of 256 KiB and
/// more mapped on their own and unmapped when freed; a request's ordinary
/// allocations are far smaller.
fn return_large_blocks() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt before any thread starts, with a documented option.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        }
        // Free pages between live blocks stay resident until trimmed: a
        // trim every 10 s gives a load's leftovers back (about 1 ms each).
        let _ = std::thread::Builder::new()
            .name("malloc-trim".into())
            .spawn(|| loop {
                std::thread::sleep(std::time::Duration::from_secs(10));
                // SAFETY: malloc_trim only returns free memory to the system.
                unsafe {
                    libc::malloc_trim(0);
                }
            });
    }
}
