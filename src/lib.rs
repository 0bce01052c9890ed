//! pgcat: a PostgreSQL pooler and proxy, a maintained drop-in for PgCat.
//!
//! The folders are the architecture: `wire` frames bytes, `auth` proves who is who,
//! `frontend` serves clients, `backend` talks to PostgreSQL, `pool` hands out server
//! connections, `config` reads `pgcat.toml`, `app` ties them together.

pub mod admin;
pub mod app;
pub mod auth;
pub mod backend;
pub mod config;
pub mod demo;
pub mod frontend;
pub mod localpg;
pub mod net;
pub mod pool;
pub mod stats;
pub mod wire;
