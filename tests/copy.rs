//! COPY through the pooler: 100k rows in and out byte for byte, and a COPY that fails midway
//! leaves the client connection usable.

mod support;

use std::io::Write;
use std::time::Duration;

use support::raw::{self, Msg, RawConn};
use support::{config, free_port, run_client, shared, Pooler, DB, SCRAM_PASS, SCRAM_USER};

const ROWS: usize = 100_000;

/// 100k rows of COPY text format in canonical form (what COPY TO prints back): integers,
/// UTF-8 text, an escaped tab and backslash, NULLs.
fn copy_data() -> Vec<u8> {
    let mut out = Vec::with_capacity(ROWS * 40);
    for i in 0..ROWS {
        let note = if i % 7 == 0 {
            "\\N".to_owned()
        } else {
            format!("tab\\there \\\\ é{}", i % 13)
        };
        writeln!(out, "{i}\trow-{i}\t{note}").expect("write to vec");
    }
    out
}

fn copy_data_frame(chunk: &[u8]) -> Vec<u8> {
    let mut f = vec![b'd'];
    f.extend_from_slice(&(chunk.len() as i32 + 4).to_be_bytes());
    f.extend_from_slice(chunk);
    f
}

const COPY_DONE: [u8; 5] = [b'c', 0, 0, 0, 4];

/// Starts `COPY ... FROM STDIN`, streams `data` in 64 KB CopyData messages from a writer
/// thread (so a server error cannot deadlock us), sends CopyDone, and returns every reply up
/// to ReadyForQuery.
fn copy_in(conn: &mut RawConn, sql: &str, data: Vec<u8>) -> Vec<Msg> {
    conn.send(&raw::query(sql)).expect("send COPY");
    let response = conn.read_msg().expect("CopyInResponse");
    assert_eq!(
        response.kind(),
        'G',
        "expected CopyInResponse, got {response:?}"
    );
    let mut writer = conn.stream.try_clone().expect("clone socket");
    writer
        .set_write_timeout(Some(Duration::from_secs(30)))
        .expect("write timeout");
    let sender = std::thread::spawn(move || {
        for chunk in data.chunks(64 * 1024) {
            if writer.write_all(&copy_data_frame(chunk)).is_err() {
                return;
            }
        }
        let _ = writer.write_all(&COPY_DONE);
    });
    let replies = conn.read_until_ready().expect("replies to COPY FROM STDIN");
    sender.join().expect("writer thread");
    replies
}

/// Runs `COPY ... TO STDOUT` and returns the concatenated CopyData and the other replies.
fn copy_out(conn: &mut RawConn, sql: &str) -> (Vec<u8>, Vec<Msg>) {
    conn.send(&raw::query(sql)).expect("send COPY TO");
    let mut data = Vec::new();
    let mut other = Vec::new();
    loop {
        let msg = conn.read_msg().expect("COPY TO STDOUT reply");
        match msg.tag {
            b'd' => data.extend_from_slice(&msg.body),
            b'Z' => {
                other.push(msg);
                return (data, other);
            }
            _ => other.push(msg),
        }
    }
}

fn create_table(name: &str) {
    let cluster = shared();
    cluster
        .psql(
            &cluster.primary,
            DB,
            &format!("CREATE TABLE {name} (id int PRIMARY KEY, name text, note text); ALTER TABLE {name} OWNER TO {SCRAM_USER};"),
        )
        .expect("create table");
}

#[test]
fn copy_100k_rows_in_and_out_round_trips_byte_for_byte() {
    let cluster = shared();
    create_table("copy_roundtrip");
    let pooler = Pooler::start(&config(cluster, free_port(), "transaction", 2, ""));
    let mut conn = RawConn::connect(pooler.port, SCRAM_USER, SCRAM_PASS, DB).expect("login");
    conn.set_read_timeout(Duration::from_secs(60));

    let data = copy_data();
    let replies = copy_in(&mut conn, "COPY copy_roundtrip FROM STDIN", data.clone());
    let tags = raw::tags(&replies);
    assert_eq!(tags, "CZ", "COPY FROM STDIN replies: {replies:?}");
    assert_eq!(replies[0].command_tag(), format!("COPY {ROWS}"));

    // PostgreSQL agrees on what arrived.
    let count = cluster
        .psql(
            &cluster.primary,
            DB,
            "SELECT count(*), count(note) FROM copy_roundtrip",
        )
        .expect("count");
    assert_eq!(count, format!("{ROWS}|{}", ROWS - ROWS.div_ceil(7)));

    let (out, replies) = copy_out(
        &mut conn,
        "COPY (SELECT * FROM copy_roundtrip ORDER BY id) TO STDOUT",
    );
    assert_eq!(raw::tags(&replies), "HcCZ", "COPY TO STDOUT replies");
    assert_eq!(out.len(), data.len(), "COPY TO STDOUT length");
    assert!(
        out == data,
        "COPY TO STDOUT differs from what was copied in"
    );

    // A real client too: psql's COPY TO STDOUT through the pooler gives the same bytes.
    let conninfo = format!(
        "host=127.0.0.1 port={} user={SCRAM_USER} dbname={DB}",
        pooler.port
    );
    let psql = run_client(
        cluster,
        "psql",
        SCRAM_PASS,
        &[
            &conninfo,
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "COPY (SELECT * FROM copy_roundtrip ORDER BY id) TO STDOUT",
        ],
        Duration::from_secs(120),
    );
    assert!(
        psql.status.success(),
        "psql COPY TO STDOUT: {}",
        String::from_utf8_lossy(&psql.stderr)
    );
    assert!(
        psql.stdout == data,
        "psql's COPY TO STDOUT differs ({} bytes vs {})",
        psql.stdout.len(),
        data.len()
    );

    // The connection is still in a clean state afterwards.
    let r = conn.simple_query("SELECT 1").expect("query after COPY");
    assert_eq!(raw::tags(&r), "TDCZ");
}

#[test]
fn copy_failing_midway_leaves_the_connection_usable() {
    let cluster = shared();
    create_table("copy_bad");
    for mode in ["transaction", "session"] {
        let pooler = Pooler::start(&config(cluster, free_port(), mode, 1, ""));
        let mut conn = RawConn::connect(pooler.port, SCRAM_USER, SCRAM_PASS, DB).expect("login");
        conn.set_read_timeout(Duration::from_secs(60));

        // 50k good rows, one that is not an integer, 50k more.
        let mut data = Vec::new();
        for i in 0..50_000 {
            writeln!(data, "{i}\tgood\t\\N").expect("write");
        }
        data.extend_from_slice(b"not-a-number\tbad\t\\N\n");
        for i in 50_000..100_000 {
            writeln!(data, "{i}\tgood\t\\N").expect("write");
        }
        let replies = copy_in(&mut conn, "COPY copy_bad FROM STDIN", data);
        assert_eq!(
            raw::tags(&replies),
            "EZ",
            "{mode}: replies to the failing COPY: {replies:?}"
        );
        assert_eq!(
            replies[0].sqlstate().as_deref(),
            Some("22P02"),
            "{mode}: invalid integer"
        );
        assert_eq!(
            replies[1].body, b"I",
            "{mode}: idle (not in a failed transaction) after the COPY"
        );

        // Same connection: nothing was copied, and queries work.
        let r = conn
            .simple_query("SELECT count(*) FROM copy_bad")
            .expect("count after failed COPY");
        assert_eq!(raw::tags(&r), "TDCZ", "{mode}: replies {r:?}");
        assert_eq!(
            r[1].row(),
            vec![Some("0".to_owned())],
            "{mode}: the failed COPY inserted nothing"
        );
        let r = conn.simple_query("SELECT 'still alive'").expect("query");
        assert_eq!(r[1].row(), vec![Some("still alive".to_owned())], "{mode}");

        // And a good COPY right after works on the same connection.
        let replies = copy_in(
            &mut conn,
            "COPY copy_bad FROM STDIN",
            b"1\tok\t\\N\n2\tok\t\\N\n".to_vec(),
        );
        assert_eq!(
            raw::tags(&replies),
            "CZ",
            "{mode}: a good COPY after the failed one: {replies:?}"
        );
        conn.simple_query("TRUNCATE copy_bad").expect("truncate");
    }
}
