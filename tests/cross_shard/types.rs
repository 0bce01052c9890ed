//! ORDER BY and min/max across shards for every type the merge orders (text under the C
//! collation, varchar, dates BC and AD, timestamps with and without zone, times,
//! intervals, uuid, bool, floats with NaN and infinities, numeric), in text results
//! (simple protocol) and binary results (tokio-postgres' extended protocol), compared with
//! the oracle byte for byte. Text under another collation is refused, naming it.

use tokio_postgres::types::{FromSql, Type};

use super::*;

/// A column's value as the server sent it, whatever its type (binary format).
#[derive(Debug, PartialEq)]
struct Raw(Option<Vec<u8>>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(Some(raw.to_vec())))
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(None))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Rows of `sql` over the extended protocol, every column in binary as sent.
async fn binary_rows(client: &Client, sql: &str) -> Result<Vec<Vec<Raw>>, String> {
    let rows = client
        .query(sql, &[])
        .await
        .map_err(|e| format!("{sql}: {e:?}"))?;
    Ok(rows
        .iter()
        .map(|row| (0..row.len()).map(|i| row.get::<_, Raw>(i)).collect())
        .collect())
}

/// Statements whose order is fixed (ties broken by id), over `kinds`.
const ORDERED_KINDS: &[&str] = &[
    "SELECT id, t FROM kinds ORDER BY t, id",
    "SELECT id, t FROM kinds ORDER BY t DESC, id DESC LIMIT 17",
    "SELECT id, vc FROM kinds ORDER BY vc DESC, id",
    "SELECT id, d FROM kinds ORDER BY d NULLS FIRST, id",
    "SELECT id, d FROM kinds ORDER BY d DESC NULLS LAST, id LIMIT 30",
    "SELECT id, ts FROM kinds ORDER BY ts, id",
    "SELECT id, tz FROM kinds ORDER BY tz DESC, id",
    "SELECT id, tm FROM kinds ORDER BY tm, id",
    "SELECT id, iv FROM kinds ORDER BY iv, id",
    "SELECT id, u FROM kinds ORDER BY u",
    "SELECT id, b, f FROM kinds ORDER BY b, f DESC, id",
    "SELECT id, n FROM kinds ORDER BY n, id",
    "SELECT * FROM kinds ORDER BY id DESC LIMIT 5",
];

const AGGREGATED_KINDS: &[&str] = &[
    "SELECT min(t), max(t), min(vc), max(vc), min(d), max(d), count(d) FROM kinds",
    "SELECT min(ts), max(ts), min(tz), max(tz), min(tm), max(tm) FROM kinds",
    "SELECT max(iv), min(f), max(f), min(n), max(n), sum(n), count(*), sum(id), bool_and(b), bool_or(b) FROM kinds",
    "SELECT min(n), sum(id) FROM kinds WHERE id < 0",
    "SELECT b, count(*), min(d), max(tz), sum(n) FROM kinds GROUP BY b ORDER BY b",
    "SELECT iv, count(*) FROM kinds GROUP BY iv ORDER BY 2 DESC, 1 LIMIT 7",
    "SELECT DISTINCT u FROM kinds ORDER BY u LIMIT 9",
    "SELECT b, avg(n), avg(id) AS a FROM kinds GROUP BY b ORDER BY a",
];

#[test]
fn every_ordered_type_merges_in_text_and_binary_as_one_database() {
    let cluster = cluster();
    let pooler = pooler(cluster, ALL);
    runtime().block_on(async {
        let client = connect_xs(&pooler).await;
        let oracle = oracle(cluster).await;
        for sql in ORDERED_KINDS.iter().chain(AGGREGATED_KINDS) {
            let want = try_rows(&oracle, sql).await.expect("the oracle answers");
            let got = try_rows(&client, sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
            assert_eq!(got, want, "{sql}: text results, as one database");
            let want = binary_rows(&oracle, sql).await.expect("the oracle answers");
            let got = binary_rows(&client, sql)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(got, want, "{sql}: binary results, as one database");
        }
    });
}

#[test]
fn text_under_another_collation_or_date_style_is_refused() {
    let cluster = cluster();
    let pooler = pooler(cluster, ALL);
    runtime().block_on(async {
        let client = connect_xs(&pooler).await;
        for (sql, names) in [
            ("SELECT id, label FROM intl ORDER BY label", "en-x-icu"),
            ("SELECT max(label) FROM intl", "en-x-icu"),
            // An expression's collation is not known where a column has another one.
            ("SELECT lower(t) AS l FROM kinds ORDER BY l", "collation"),
            (
                "SELECT t COLLATE \"C\" AS c FROM kinds ORDER BY c",
                "COLLATE",
            ),
        ] {
            let (code, message) = expect_error(sql, try_rows(&client, sql).await);
            assert_eq!(code, "0A000", "{sql}: {message}");
            assert!(message.contains(names), "{sql}: {message}");
        }
        // DateStyle SQL prints dates the merge does not read: refused, not misordered.
        client
            .simple_query("SET DateStyle TO 'SQL, DMY'")
            .await
            .expect("SET");
        let sql = "SELECT id, d FROM kinds ORDER BY d, id";
        let (code, message) = expect_error(sql, try_rows(&client, sql).await);
        assert_eq!(code, "0A000", "{message}");
        // In binary the DateStyle does not matter.
        client.simple_query("RESET DateStyle").await.expect("RESET");
        let oracle = oracle(cluster).await;
        oracle
            .simple_query("SET DateStyle TO 'SQL, DMY'")
            .await
            .expect("SET");
        client
            .simple_query("SET DateStyle TO 'SQL, DMY'")
            .await
            .expect("SET");
        let want = binary_rows(&oracle, sql).await.expect("oracle");
        assert_eq!(binary_rows(&client, sql).await.expect("binary"), want);
    });
}
