//! Crash points for the crash tests, in debug builds only:
//! `STRONGROOM_FAILPOINT=<point>` ends the process at `point` as a crash
//! (SIGKILL, power loss) there would.

pub fn stop_here(point: &str) {
    if cfg!(debug_assertions) && std::env::var("STRONGROOM_FAILPOINT").as_deref() == Ok(point) {
        std::process::abort();
    }
}
