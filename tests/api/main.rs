//! HTTP integration tests: each starts the real server and talks to it over
//! loopback, as a client of the quiva secrets API would.

#[macro_use]
mod helpers;

mod apikeys;
mod audit;
mod auth;
mod backup;
mod batch;
mod cluster;
mod console;
mod discovery;
mod durability;
mod encryption;
mod eso;
mod expiry;
mod gateways;
mod identity;
mod jwt_keys;
mod keys;
mod limits;
mod oidc;
mod ops;
mod outage;
mod tenancy;
mod tls;
mod trail;
mod vault;
mod vault_clients;
mod versions;
mod watch;
mod wire;
