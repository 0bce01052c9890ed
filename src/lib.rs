//! pgcat: a PostgreSQL pooler and proxy, a maintained drop-in for PgCat.
//!
//! The path of a query: `runtime` accepts the connection and hands it to `frontend`, whose
//! `login` lets the client in (`auth`) and whose `relay` serves it: `relay::dispatch` routes
//! each request (the pool's router in `pool::router`, the parser crate), `pool::checkout`
//! and `pool::take` lend a server connection (`backend`), `relay::conversation` forwards
//! bytes both ways (`wire` framing) until the server goes back to its pool; `admin` answers
//! the admin databases and `/metrics` from `stats` and `app`. A statement with no shard in a
//! pool that runs such statements everywhere (`frontend::cross_shard`) goes to
//! `relay::fanout` instead, which takes a server of every shard and answers through `merge`.
//!
//! Layers, bottom to top: a module uses only modules of lower layers (tests/architecture.rs
//! reads this list and fails on any other use, so it stays true).
//! 1. `wire` (protocol framing and the messages the pooler writes), `auth` (proofs of
//!    identity, both directions), `localpg` (throwaway local PostgreSQL clusters), `fault`
//!    (fault points for crash and race tests)
//! 2. `net` (sockets and TLS), `merge` (the shards' answers to a statement run on every
//!    shard, made into the one answer a single database would give), `copy` (COPY data
//!    split into rows by sharding key)
//! 3. `config` (`pgcat.toml`)
//! 4. `stats` (counters, the registry of clients and servers, address health)
//! 5. `backend` (one connection to PostgreSQL)
//! 6. `pool` (server connection pools, checkout, health checks)
//! 7. `twophase` (two-phase commit across shards: the decision log, in-doubt resolution)
//! 8. `app` (the shared state: configuration and pools in force, reload, shutdown)
//! 9. `admin` (the admin databases and the Prometheus endpoint)
//! 10. `frontend` (clients: login, relay)
//! 11. `runtime` (listeners, signals, the running process, online upgrades)
//! 12. `demo` (`pgcat demo`)

pub mod admin;
pub mod app;
pub mod auth;
pub mod backend;
pub mod config;
pub mod copy;
pub mod demo;
pub mod fault;
pub mod frontend;
pub mod localpg;
pub mod merge;
pub mod net;
pub mod pool;
pub mod runtime;
pub mod stats;
pub mod twophase;
pub mod wire;
