//! Client CLI tests: each starts the real server on port 0 and runs the real
//! `strongroom` binary's client commands against it.

mod helpers;

mod basics;
mod errors;
mod identity;
mod import_export;
mod run;
mod watch;
