//! A client's session parameters: what it sent in its StartupMessage (including
//! `options=-c name=value ...`), kept by lower-case name and applied on every server it
//! gets, and the ParameterStatus values it is told at login.

/// Startup keys that are not session parameters.
const NOT_PARAMETERS: [&str; 3] = ["user", "database", "replication"];

/// Collects the session parameters from startup key/values. `options` is split into its
/// `-c name=value` / `--name=value` settings. Returns an error text for an options string
/// the pooler cannot interpret.
pub fn from_startup(startup: &[(String, String)]) -> Result<Vec<(String, String)>, String> {
    let mut params: Vec<(String, String)> = Vec::new();
    let mut set = |name: &str, value: &str| {
        let name = name.to_ascii_lowercase();
        params.retain(|(n, _)| *n != name);
        params.push((name, value.to_string()));
    };
    for (name, value) in startup {
        let lower = name.to_ascii_lowercase();
        if NOT_PARAMETERS.contains(&lower.as_str()) || lower.starts_with("_pq_.") {
            continue;
        }
        if lower == "options" {
            for (n, v) in parse_options(value)? {
                set(&n, &v);
            }
        } else {
            set(name, value);
        }
    }
    params.sort();
    Ok(params)
}

/// Splits PostgreSQL's `options` value: whitespace-separated, backslash escapes.
fn parse_options(options: &str) -> Result<Vec<(String, String)>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => word.extend(chars.next()),
            c if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let mut out = Vec::new();
    let mut words = words.into_iter();
    while let Some(w) = words.next() {
        let setting = if w == "-c" {
            words
                .next()
                .ok_or("option -c needs a name=value argument")?
        } else if let Some(s) = w.strip_prefix("-c").or_else(|| w.strip_prefix("--")) {
            s.to_string()
        } else {
            return Err(format!(
                "the pooler only supports -c name=value in options, got \"{w}\""
            ));
        };
        let (n, v) = setting
            .split_once('=')
            .ok_or_else(|| format!("option \"{setting}\" has no value (expected name=value)"))?;
        out.push((n.replace('-', "_"), v.to_string()));
    }
    Ok(out)
}

/// The ParameterStatus a client is told: what the servers report, with the client's own
/// values for the parameters it set, in their `canonical` spelling where one is known.
pub fn reported<'a>(
    server: &'a [(String, String)],
    canonical: &'a [(String, String)],
    client: &'a [(String, String)],
) -> impl Iterator<Item = (&'a str, &'a str)> {
    server.iter().map(move |(name, value)| {
        let own = |list: &'a [(String, String)]| {
            list.iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        };
        let value = own(canonical).or_else(|| own(client)).unwrap_or(value);
        (name.as_str(), value.as_str())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn options_become_parameters() {
        let p = from_startup(&kv(&[
            ("user", "u"),
            ("database", "d"),
            ("DateStyle", "ISO"),
            (
                "options",
                "-c search_path=a,b --statement-timeout=5s -cwork_mem=1MB -c x=a\\ b",
            ),
        ]))
        .unwrap();
        assert_eq!(
            p,
            kv(&[
                ("datestyle", "ISO"),
                ("search_path", "a,b"),
                ("statement_timeout", "5s"),
                ("work_mem", "1MB"),
                ("x", "a b")
            ])
        );
        assert!(from_startup(&kv(&[("options", "-X")])).is_err());
    }

    #[test]
    fn reported_values_prefer_the_clients() {
        let server = kv(&[("application_name", ""), ("server_version", "15.1")]);
        let client = kv(&[("application_name", "psql"), ("client_encoding", "utf-8")]);
        let server = [server, kv(&[("client_encoding", "SQL_ASCII")])].concat();
        let canonical = kv(&[("client_encoding", "UTF8")]);
        assert_eq!(
            reported(&server, &canonical, &client).collect::<Vec<_>>(),
            [
                ("application_name", "psql"),
                ("server_version", "15.1"),
                ("client_encoding", "UTF8")
            ]
        );
    }
}
