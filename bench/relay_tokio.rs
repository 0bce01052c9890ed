//! bench/relay_tokio.rs: the floor of tokio, the pooler's runtime. Like bench/relay_epoll.c
//! it relays bytes both ways between each client and its own PostgreSQL connection, with no
//! protocol and no pooling, on one thread (the pooler's benchmark setting, one worker) — but
//! through tokio's reactor, tasks and wakers, as the pooler does. What `CALLGRIND=1
//! bench/pgbench.sh` counts for it is what tokio costs a transaction before the pooler does
//! anything.
//!
//! Usage: `relay_tokio LISTEN_PORT UPSTREAM_PORT` (both on 127.0.0.1); built by
//! `cargo build --release --example relay_tokio`.

use std::net::{Ipv4Addr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn port(arg: Option<String>) -> u16 {
    match arg.as_deref().map(str::parse) {
        Some(Ok(p)) => p,
        _ => {
            eprintln!("usage: relay_tokio LISTEN_PORT UPSTREAM_PORT");
            std::process::exit(2);
        }
    }
}

/// Forwards both directions until either side closes: one task, one wake-up per readable
/// socket, a read and a write per chunk (as bench/relay_epoll.c does).
async fn relay(mut client: TcpStream, upstream: SocketAddr) -> std::io::Result<()> {
    let mut server = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (mut to_server, mut to_client) = (vec![0u8; 16384], vec![0u8; 16384]);
    loop {
        tokio::select! {
            n = client.read(&mut to_server) => match n? {
                0 => return Ok(()),
                n => server.write_all(&to_server[..n]).await?,
            },
            n = server.read(&mut to_client) => match n? {
                0 => return Ok(()),
                n => client.write_all(&to_client[..n]).await?,
            },
        }
    }
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (listen, upstream) = (port(args.next()), port(args.next()));
    let upstream = SocketAddr::from((Ipv4Addr::LOCALHOST, upstream));
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?
        .block_on(async {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, listen)).await?;
            loop {
                let (client, _) = listener.accept().await?;
                tokio::spawn(async move {
                    let _ = relay(client, upstream).await;
                });
            }
        })
}
