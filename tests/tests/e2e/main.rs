//! End-to-end tests: real Postgres, real Redis, a real mock upstream over HTTP, and both planes
//! in-process. Each test has its own database, stream and ports, so they run in parallel.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin;
mod billing;
mod caps;
mod cli;
mod config;
mod console;
mod failover;
mod faults;
mod health;
mod limits;
mod models;
mod proxy;
mod quickstart;
mod routes;
mod routing;
mod shutdown;
mod store_contract;
