fn main() {
    let n: usize = std::env::args().nth(1).unwrap().parse().unwrap();
    let mut sql = String::from("SELECT * FROM data WHERE id = 0");
    for i in 1..n {
        sql.push_str(&format!(" AND a = {i}"));
    }
    let h = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let t = std::time::Instant::now();
            let c = pgcat_parser::classify(&sql, None);
            let k =
                pgcat_parser::find_keys(&sql, &pgcat_parser::KeyColumn::parse("data.id").unwrap());
            (c.parsed, k.len(), t.elapsed())
        })
        .unwrap();
    println!("{:?}", h.join());
}
