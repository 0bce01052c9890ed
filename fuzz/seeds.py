#!/usr/bin/env python3
"""Writes the binary seed corpus of the frontend_framing fuzz target to
fixtures/fuzz/frontend_framing/ (the route seeds are plain SQL files, edited by hand).

Each seed is what a client sends on a fresh connection: startup-phase packets, then
frontend messages. Run from the repository root: python3 fuzz/seeds.py
"""

import os
import struct

OUT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "fuzz", "frontend_framing")


def packet(body: bytes) -> bytes:
    """A startup-phase packet: length (includes itself), body."""
    return struct.pack(">I", len(body) + 4) + body


def startup(*params: str, minor: int = 0) -> bytes:
    body = struct.pack(">I", (3 << 16) | minor)
    for p in params:
        body += p.encode() + b"\0"
    return packet(body + b"\0")


def msg(tag: bytes, body: bytes = b"") -> bytes:
    return tag + struct.pack(">I", len(body) + 4) + body


def cstr(s: str) -> bytes:
    return s.encode() + b"\0"


def parse(sql: str, name: str = "", types=()) -> bytes:
    return msg(b"P", cstr(name) + cstr(sql) + struct.pack(">H", len(types))
               + b"".join(struct.pack(">I", t) for t in types))


def bind(params, portal: str = "", stmt: str = "", formats=(), result_formats=()) -> bytes:
    body = cstr(portal) + cstr(stmt)
    body += struct.pack(">H", len(formats)) + b"".join(struct.pack(">H", f) for f in formats)
    body += struct.pack(">H", len(params))
    for p in params:
        body += struct.pack(">i", -1) if p is None else struct.pack(">i", len(p)) + p
    body += struct.pack(">H", len(result_formats))
    body += b"".join(struct.pack(">H", f) for f in result_formats)
    return msg(b"B", body)


def describe(kind: bytes, name: str = "") -> bytes:
    return msg(b"D", kind + cstr(name))


def execute(portal: str = "", rows: int = 0) -> bytes:
    return msg(b"E", cstr(portal) + struct.pack(">I", rows))


SYNC = msg(b"S")
FLUSH = msg(b"H")
TERMINATE = msg(b"X")
SSL = packet(struct.pack(">I", 80877103))
GSSENC = packet(struct.pack(">I", 80877104))
LOGIN = startup("user", "alice", "database", "db", "application_name", "psql")


def query(sql: str) -> bytes:
    return msg(b"Q", cstr(sql))


def password(p: str) -> bytes:
    return msg(b"p", cstr(p))


def sasl_initial(data: bytes) -> bytes:
    return msg(b"p", cstr("SCRAM-SHA-256") + struct.pack(">i", len(data)) + data)


def error_fields(**f) -> bytes:
    return b"".join(k.encode() + cstr(v) for k, v in f.items()) + b"\0"


SEEDS = {
    "startup_plain": LOGIN,
    "startup_user_only": startup("user", "bob"),
    "startup_minor_2_pq_options": startup("user", "u", "database", "d", "_pq_.compression", "on",
                                          minor=2),
    "startup_options": startup("user", "u", "options", "-c search_path=s -c work_mem=4MB",
                               "client_encoding", "UTF8", "DateStyle", "ISO, MDY"),
    "startup_replication": startup("user", "u", "replication", "database"),
    "startup_protocol_2": packet(struct.pack(">I", 2 << 16) + b"user\0u\0\0"),
    "startup_unterminated_param": packet(struct.pack(">I", 3 << 16) + b"user\0alice"),
    "startup_trailing_data": packet(struct.pack(">I", 3 << 16) + b"user\0u\0\0junk"),
    "startup_bad_utf8": packet(struct.pack(">I", 3 << 16) + b"user\0\xff\xfe\0\0"),
    "ssl_then_startup": SSL + LOGIN + query("SELECT 1") + TERMINATE,
    "gssenc_then_ssl_then_startup": GSSENC + SSL + LOGIN + TERMINATE,
    "ssl_bad_length": packet(struct.pack(">I", 80877103) + b"x"),
    "cancel": packet(struct.pack(">Iii", 80877102, 4242, 0x1234abcd)),
    "cancel_long_secret": packet(struct.pack(">Ii", 80877102, 7) + bytes(range(32))),
    "cancel_short": packet(struct.pack(">Ii", 80877102, 7)),
    "startup_len_7": struct.pack(">I", 7) + b"\0\3\0",
    "startup_len_minus_1": struct.pack(">i", -1) + b"\0\3\0\0user\0u\0\0",
    "startup_len_10001": struct.pack(">I", 10001) + struct.pack(">I", 3 << 16),
    "startup_len_max_i32": struct.pack(">I", 2**31 - 1) + struct.pack(">I", 3 << 16),
    "startup_truncated": LOGIN[:len(LOGIN) - 5],
    "simple_queries": LOGIN + query("SELECT 1") + query("BEGIN; SELECT 2; COMMIT")
    + query("SET SHARD TO '1'") + TERMINATE,
    "extended_batch": LOGIN + parse("SELECT * FROM data WHERE id = $1", "s1", (20,))
    + bind([b"42"], stmt="s1") + describe(b"P") + execute() + SYNC + TERMINATE,
    "extended_binary_params": LOGIN + parse("INSERT INTO data (id, value) VALUES ($1, $2)")
    + bind([struct.pack(">q", -7), None], formats=(1, 0), result_formats=(1,))
    + execute(rows=10) + FLUSH + SYNC,
    "extended_describe_close": LOGIN + parse("SELECT $1::int", "named") + describe(b"S", "named")
    + SYNC + msg(b"C", b"Snamed\0") + SYNC,
    "pipeline": LOGIN + b"".join(parse("SELECT %d" % i) + bind([]) + execute() for i in range(5))
    + SYNC,
    "copy_in": LOGIN + query("COPY t FROM STDIN") + msg(b"d", b"1\tone\n2\ttwo\n") + msg(b"c")
    + msg(b"f", cstr("client gave up")),
    "function_call": LOGIN + msg(b"F", struct.pack(">IHHi", 1598, 0, 1, 1) + b"x"
                                 + struct.pack(">H", 0)),
    "password_md5": LOGIN + password("md5" + "0" * 32) + query("SELECT 1"),
    "sasl_exchange": LOGIN + sasl_initial(b"n,,n=,r=abcdefghijklmnop")
    + msg(b"p", b"c=biws,r=abcdefghijklmnopSERVER,p=AAAA"),
    "message_len_3": LOGIN + b"Q\0\0\0\3",
    "message_len_minus_1": LOGIN + b"Q\xff\xff\xff\xff",
    "message_len_max_i32": LOGIN + b"Q\x7f\xff\xff\xff" + b"SELECT 1\0",
    "message_len_1gb_plus_1": LOGIN + b"D" + struct.pack(">I", (1 << 30) + 1),
    "message_truncated": LOGIN + query("SELECT 1")[:7],
    "message_huge_streamed": LOGIN + msg(b"d", bytes(60000)) + SYNC,
    "bad_tag": LOGIN + msg(b"Z", b"I") + msg(b"\0"),
    "error_response_fields": LOGIN + msg(b"E", error_fields(S="FATAL", V="FATAL", C="57P01",
                                                            M="terminating connection",
                                                            D="detail", H="hint")),
    "no_startup_just_messages": query("SELECT 1") + SYNC + TERMINATE,
}


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print(f"{len(SEEDS)} seeds in {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
