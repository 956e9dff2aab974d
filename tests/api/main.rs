//! HTTP integration tests: each starts the real server and talks to it over
//! loopback, as a client of the quiva secrets API would.

mod helpers;

mod auth;
mod durability;
mod encryption;
mod ops;
mod tenancy;
mod versions;
mod wire;
