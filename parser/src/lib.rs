//! pgcat-parser: the routing brain of pgcat. Decides where a transaction goes from its
//! SQL, the session's SQL-extension settings and the pool's settings. No I/O, no tokio:
//! everything here is testable byte for byte.

pub mod hash;
