//! Statements that differ from a given one only in their literals: what the analysis cache
//! must tell apart from the original (its unit tests and the `route` fuzz target use them).
//! Not for routing.

/// `sql` with digits changed (0..8 → +1), outside quotes only or everywhere.
pub fn bump_digits(sql: &str, inside_quotes: bool) -> String {
    let mut quoted = None;
    sql.chars()
        .map(|c| match (quoted, c) {
            (None, '\'' | '"') => {
                quoted = Some(c);
                c
            }
            (Some(q), c) if c == q => {
                quoted = None;
                c
            }
            (q, '0'..='8') if q.is_none() || inside_quotes => char::from(c as u8 + 1),
            _ => c,
        })
        .collect()
}

/// `sql` with the text inside single quotes changed (same length, letters shifted).
pub fn swap_strings(sql: &str) -> String {
    let mut quoted = false;
    sql.chars()
        .map(|c| match c {
            '\'' => {
                quoted = !quoted;
                c
            }
            'a'..='y' if quoted => char::from(c as u8 + 1),
            'z' if quoted => 'a',
            _ => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_literals_change() {
        assert_eq!(
            bump_digits("SELECT 1, '2', \"t3\"", false),
            "SELECT 2, '2', \"t3\""
        );
        assert_eq!(bump_digits("SELECT 1, '2'", true), "SELECT 2, '3'");
        assert_eq!(swap_strings("SELECT 'az', b"), "SELECT 'ba', b");
    }
}
