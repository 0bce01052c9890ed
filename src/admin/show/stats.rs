//! SHOW STATS (both flavours), STATS_TOTALS, STATS_AVERAGES and TOTALS.

use super::*;

/// The columns of [`totals_cells`], as SHOW STATS names them.
const TOTALS_COLUMNS: [Col; 7] = [
    ("total_xact_count", true),
    ("total_query_count", true),
    ("total_received", true),
    ("total_sent", true),
    ("total_xact_time", true),
    ("total_query_time", true),
    ("total_wait_time", true),
];

fn totals_cells(t: &Totals) -> Vec<String> {
    vec![
        n(t.xact_count),
        n(t.query_count),
        n(t.bytes_received),
        n(t.bytes_sent),
        n(t.xact_time_us),
        n(t.query_time_us),
        n(t.wait_time_us),
    ]
}

pub(super) fn stats(app: &App, flavor: Flavor, out: &mut BytesMut) {
    let rows = report::addresses(app);
    match flavor {
        Flavor::PgCat => {
            let cols = [
                &[("instance", false), ("database", false), ("user", false)][..],
                &TOTALS_COLUMNS,
                &[
                    ("total_errors", true),
                    ("avg_xact_count", true),
                    ("avg_query_count", true),
                    ("avg_recv", true),
                    ("avg_sent", true),
                    ("avg_errors", true),
                    ("avg_xact_time", true),
                    ("avg_query_time", true),
                    ("avg_wait_time", true),
                ],
            ]
            .concat();
            let data = rows
                .iter()
                .map(|r| {
                    let (t, a) = (&r.totals, &r.averages);
                    let mut row = vec![r.name.clone(), r.pool.clone(), r.user.clone()];
                    row.extend(totals_cells(t));
                    row.push(n(t.errors));
                    row.extend([
                        n(a.xact_count),
                        n(a.query_count),
                        n(a.bytes_received),
                        n(a.bytes_sent),
                        n(a.errors),
                    ]);
                    row.extend([n(a.xact_time_us), n(a.query_time_us), n(a.wait_time_us)]);
                    row
                })
                .collect();
            result(out, &cols, data);
        }
        Flavor::PgBouncer => {
            let cols = [
                &[("database", false)][..],
                &TOTALS_COLUMNS,
                &[
                    ("avg_xact_count", true),
                    ("avg_query_count", true),
                    ("avg_recv", true),
                    ("avg_sent", true),
                    ("avg_xact_time", true),
                    ("avg_query_time", true),
                    ("avg_wait_time", true),
                ],
            ]
            .concat();
            let data = report::per_database(&rows)
                .into_iter()
                .map(|(db, t, a)| {
                    let mut row = vec![db];
                    row.extend(totals_cells(&t));
                    row.extend(totals_cells(&a));
                    row
                })
                .collect();
            result(out, &cols, data);
        }
    }
}

pub(super) fn stats_split(app: &App, averages: bool, out: &mut BytesMut) {
    let cols: &[Col] = &[
        ("database", false),
        ("xact_count", true),
        ("query_count", true),
        ("bytes_received", true),
        ("bytes_sent", true),
        ("xact_time", true),
        ("query_time", true),
        ("wait_time", true),
    ];
    let data = report::per_database(&report::addresses(app))
        .into_iter()
        .map(|(db, t, a)| {
            let mut row = vec![db];
            row.extend(totals_cells(if averages { &a } else { &t }));
            row
        })
        .collect();
    result(out, cols, data);
}

pub(super) fn totals(app: &App, out: &mut BytesMut) {
    let mut sum = Totals::default();
    for r in report::addresses(app) {
        sum += r.totals;
    }
    let data = TOTALS_COLUMNS
        .iter()
        .zip(totals_cells(&sum))
        .map(|((name, _), value)| vec![name.to_string(), value])
        .collect();
    result(out, &[("name", false), ("value", true)], data);
}
