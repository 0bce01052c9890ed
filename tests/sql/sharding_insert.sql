\set ON_ERROR_STOP on
-- Sharding suite, part 1 of 2: writes through the pooler (tests/routing_sharding.rs runs it with
-- `psql -X -q -A -t -f` against pool sharded_db: 3 shards, pg_bigint_hash, query parser with
-- read/write splitting) and compares stdout with expected/sharding_insert.out.
-- shard<i> only accepts rows of (MODULUS 3, REMAINDER i): a misrouted INSERT is an error and
-- psql stops. RETURNING shows where each row went: database, standby?, id.
-- Key -> shard (MODULUS 3), from PostgreSQL's satisfies_hash_partition():
--   shard0: -9223372036854775807 -2147483648 -7 2 4 6 8 27 29 2147483648 9223372036854775806 9223372036854775807
--   shard1: -9223372036854775808 -2147483649 -5 3 7 10 13 14 21 25 26 36 2147483647
--   shard2: -42 -1 0 1 5 9 11 12 22 23 30

\echo -- a fresh session
SHOW SHARD;
SHOW SERVER ROLE;
SHOW PRIMARY READS;

\echo -- SET SHARDING KEY, as in PgCat
SET SHARDING KEY TO '1';
SHOW SHARD;
INSERT INTO data (id, value) VALUES (1, 'suite') RETURNING current_database(), pg_is_in_recovery(), id;

\echo -- lower case
set sharding key to '3';
show shard;
insert into data (id, value) values (3, 'suite') returning current_database(), pg_is_in_recovery(), id;

\echo -- mixed case
SeT ShArDiNg KeY tO '7';
ShOw ShArD;
INSERT INTO data (id, value) VALUES (7, 'suite') RETURNING current_database(), pg_is_in_recovery(), id;

\echo -- no quotes
SET SHARDING KEY TO 10;
SHOW SHARD;
INSERT INTO data (id, value) VALUES (10, 'suite') RETURNING current_database(), pg_is_in_recovery(), id;

\echo -- no trailing semicolon
SET SHARDING KEY TO '13' \g
SHOW SHARD \g
INSERT INTO data (id, value) VALUES (13, 'suite') RETURNING current_database(), pg_is_in_recovery(), id;

\echo -- blanks before the semicolon
SET SHARDING KEY TO '5'   ;
SHOW SHARD   ;
INSERT INTO data (id, value) VALUES (5, 'suite') RETURNING current_database(), pg_is_in_recovery(), id;

\echo -- zero
SET SHARDING KEY TO '0';
SHOW SHARD;
INSERT INTO data (id, value) VALUES (0, 'suite') RETURNING current_database(), pg_is_in_recovery(), id;

\echo -- negative keys
SET SHARDING KEY TO '-1';
SHOW SHARD;
INSERT INTO data (id, value) VALUES (-1, 'suite') RETURNING current_database(), pg_is_in_recovery(), id;
SET SHARDING KEY TO '-7';
SHOW SHARD;
INSERT INTO data (id, value) VALUES (-7, 'suite') RETURNING current_database(), pg_is_in_recovery(), id;
SET SHARDING KEY TO -42;
SHOW SHARD;
INSERT INTO data (id, value) VALUES (-42, 'suite') RETURNING current_database(), pg_is_in_recovery(), id;
set sharding key to '-5';
SHOW SHARD;
INSERT INTO data (id, value) VALUES (-5, 'suite') RETURNING current_database(), pg_is_in_recovery(), id;

\echo -- int32 extremes and their neighbours
SET SHARDING KEY TO '2147483647';
SHOW SHARD;
INSERT INTO data (id, value) VALUES (2147483647, 'suite') RETURNING current_database(), pg_is_in_recovery(), id;
SET SHARDING KEY TO '-2147483648';
SHOW SHARD;
INSERT INTO data (id, value) VALUES (-2147483648, 'suite') RETURNING current_database(), pg_is_in_recovery(), id;
SET SHARDING KEY TO '2147483648';
SHOW SHARD;
INSERT INTO data (id, value) VALUES (2147483648, 'suite') RETURNING current_database(), pg_is_in_recovery(), id;
SET SHARDING KEY TO '-2147483649';
SHOW SHARD;
INSERT INTO data (id, value) VALUES (-2147483649, 'suite') RETURNING current_database(), pg_is_in_recovery(), id;

\echo -- int64 extremes and their neighbours
SET SHARDING KEY TO '9223372036854775807';
SHOW SHARD;
INSERT INTO data (id, value) VALUES (9223372036854775807, 'suite') RETURNING current_database(), pg_is_in_recovery(), id;
SET SHARDING KEY TO '-9223372036854775808';
SHOW SHARD;
INSERT INTO data (id, value) VALUES (-9223372036854775808, 'suite') RETURNING current_database(), pg_is_in_recovery(), id;
SET SHARDING KEY TO '9223372036854775806';
SHOW SHARD;
INSERT INTO data (id, value) VALUES (9223372036854775806, 'suite') RETURNING current_database(), pg_is_in_recovery(), id;
SET SHARDING KEY TO '-9223372036854775807';
SHOW SHARD;
INSERT INTO data (id, value) VALUES (-9223372036854775807, 'suite') RETURNING current_database(), pg_is_in_recovery(), id;

\echo -- SET SHARD
SET SHARD TO '0';
SHOW SHARD;
INSERT INTO data (id, value) VALUES (2, 'suite') RETURNING current_database(), pg_is_in_recovery(), id;
set shard to 0;
INSERT INTO data (id, value) VALUES (4, 'suite') RETURNING current_database(), pg_is_in_recovery(), id;
SeT sHaRd To '0' \g
INSERT INTO data (id, value) VALUES (6, 'suite') RETURNING current_database(), pg_is_in_recovery(), id;
SET SHARD TO '1' ;
SHOW SHARD;
INSERT INTO data (id, value) VALUES (14, 'suite') RETURNING current_database(), pg_is_in_recovery(), id;
SET SHARD TO 2;
SHOW SHARD;
INSERT INTO data (id, value) VALUES (9, 'suite') RETURNING current_database(), pg_is_in_recovery(), id;

\echo -- the later of SET SHARD and SET SHARDING KEY wins
SET SHARD TO '0';
SET SHARDING KEY TO '11';
SHOW SHARD;
INSERT INTO data (id, value) VALUES (11, 'suite') RETURNING current_database(), pg_is_in_recovery(), id;
SET SHARDING KEY TO '21';
SET SHARD TO '0';
SHOW SHARD;
INSERT INTO data (id, value) VALUES (8, 'suite') RETURNING current_database(), pg_is_in_recovery(), id;

\echo -- writes go to the primary under every role that lets them
SET SERVER ROLE TO 'primary';
SHOW SERVER ROLE;
SET SHARDING KEY TO '25';
INSERT INTO data (id, value) VALUES (25, 'suite') RETURNING current_database(), pg_is_in_recovery(), id;
SET SERVER ROLE TO 'auto';
SHOW SERVER ROLE;
SET SHARDING KEY TO '22';
INSERT INTO data (id, value) VALUES (22, 'suite') RETURNING current_database(), pg_is_in_recovery(), id;
SET SERVER ROLE TO 'default';
SHOW SERVER ROLE;
SET SHARDING KEY TO '27';
INSERT INTO data (id, value) VALUES (27, 'suite') RETURNING current_database(), pg_is_in_recovery(), id;

\echo -- and whatever the primary reads setting
SET PRIMARY READS TO 'on';
SHOW PRIMARY READS;
SET SHARDING KEY TO '26';
INSERT INTO data (id, value) VALUES (26, 'suite') RETURNING current_database(), pg_is_in_recovery(), id;
SET PRIMARY READS TO 'off';
SHOW PRIMARY READS;
SET SHARDING KEY TO '23';
INSERT INTO data (id, value) VALUES (23, 'suite') RETURNING current_database(), pg_is_in_recovery(), id;
SET PRIMARY READS TO 'default';
SHOW PRIMARY READS;
SET SHARDING KEY TO '29';
INSERT INTO data (id, value) VALUES (29, 'suite') RETURNING current_database(), pg_is_in_recovery(), id;

\echo -- a transaction on the shard of the key
SET SHARDING KEY TO '30';
BEGIN;
INSERT INTO data (id, value) VALUES (30, 'suite') RETURNING current_database(), pg_is_in_recovery(), id;
INSERT INTO data (id, value) VALUES (12, 'suite') RETURNING current_database(), pg_is_in_recovery(), id;
COMMIT;

\echo -- nextval() on the shard of the key, on the primary
SET SHARDING KEY TO '36';
SELECT current_database(), pg_is_in_recovery(), nextval('seq') > 0;

\echo -- the session at the end
SHOW SHARD;
SHOW SERVER ROLE;
SHOW PRIMARY READS;
