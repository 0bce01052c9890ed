use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
fn main() {
    for sql in std::env::args().skip(1) {
        match Parser::parse_sql(&PostgreSqlDialect {}, &sql) {
            Ok(ast) => println!("{sql}\n  => {ast:?}\n"),
            Err(e) => println!("{sql}\n  => ERR {e}\n"),
        }
    }
}
